package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore"
)

// datasetLeader is the packed-dataset duty of one term of leadership: it registers
// a pushed manifest after checking that the manifest and every shard it lists are
// in the job's data bucket. One registration at a time.
type datasetLeader struct {
	n   *Node
	log *slog.Logger

	mu    sync.Mutex
	store *objstore.Store
}

// leadDataset serves Coord("data.register") while this voter leads. The returned
// function stops it.
func (n *Node) leadDataset(log *slog.Logger) (stop func(), err error) {
	dl := &datasetLeader{n: n, log: log.With("duty", "dataset")}
	subj := n.names.Coord("data.register")
	s, err := n.opts.Conn.Subscribe(subj, func(m *nats.Msg) { go dl.handleRegister(m) })
	if err != nil {
		return nil, fmt.Errorf("coordinator: subscribe %s: %w", subj, err)
	}
	return func() { s.Unsubscribe() }, nil
}

// bucket opens the job's data bucket, once per term. It is not created here: a
// registration without it has nothing to register.
func (dl *datasetLeader) bucket(ctx context.Context) (*objstore.Store, error) {
	if dl.store != nil {
		return dl.store, nil
	}
	st, err := objstore.Open(ctx, dl.n.js, dl.n.names.DataBucket(), objstore.Options{})
	if err != nil {
		return nil, fmt.Errorf("%w (upload the shards and the manifest with `samdiffsr data push` before registering)", err)
	}
	dl.store = st
	return st, nil
}

func (dl *datasetLeader) handleRegister(m *nats.Msg) {
	n := dl.n
	var req natsutil.DataRegister
	if err := json.Unmarshal(m.Data, &req); err != nil {
		n.reply(m, natsutil.Reply{Err: "bad dataset registration request: " + err.Error()})
		return
	}
	if !sha256Hex.MatchString(req.SHA256) || req.Bytes <= 0 || req.Bytes > natsutil.MaxDataManifestBytes {
		n.reply(m, natsutil.Reply{Err: fmt.Sprintf("dataset registration names manifest SHA-256 %q of %d bytes (want 64 lower-case hex digits and 1 to %d bytes)",
			req.SHA256, req.Bytes, natsutil.MaxDataManifestBytes)})
		return
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
	defer cancel()
	man, rep := dl.verify(ctx, req)
	if rep != nil {
		n.reply(m, *rep)
		return
	}
	res, err := n.Propose(ctx, Command{Kind: CmdDataRegister, DataRegister: &DataRegistration{Manifest: man, Replace: req.Replace}})
	if err != nil || res.Outcome == Rejected {
		n.replyResult(m, res, err)
		return
	}
	if res.Outcome == OK {
		dl.log.Info("dataset manifest registered", "sha256", man.SHA256, "shards", len(man.Shards), "bytes", man.ShardBytes(), "seq", res.Seq, "client", req.Client)
	}
	n.reply(m, natsutil.Reply{Outcome: string(res.Outcome), Seq: res.Seq})
}

// verify reads the manifest back by its digest and checks that every shard it
// lists is in the bucket with its digest and size (upload, then commit). It
// returns the record to commit, or the refusal to answer.
func (dl *datasetLeader) verify(ctx context.Context, req natsutil.DataRegister) (natsutil.DataManifest, *natsutil.Reply) {
	refuse := func(format string, args ...any) (natsutil.DataManifest, *natsutil.Reply) {
		return natsutil.DataManifest{}, &natsutil.Reply{Err: fmt.Sprintf(format, args...)}
	}
	st, err := dl.bucket(ctx)
	if err != nil {
		return refuse("%v", err)
	}
	name := natsutil.DataManifestObject(req.SHA256)
	info, err := st.Stat(ctx, name)
	if err != nil || info.Size != req.Bytes {
		return refuse("manifest %s is not in bucket %s as listed (%d bytes: %v); upload it before registering", name, st.Bucket(), req.Bytes, statSays(info, err))
	}
	js, _, err := st.GetBytes(ctx, name, req.SHA256)
	if err != nil {
		return refuse("read manifest %s back: %v", name, err)
	}
	man, err := natsutil.DecodeDataManifest(js)
	if err != nil {
		return refuse("manifest %s: %v", name, err)
	}
	if why := validDataManifest(man); why != "" {
		return refuse("%s", why)
	}
	for _, s := range man.Shards {
		info, err := st.Stat(ctx, s.Name)
		if err != nil || info.SHA256 != s.SHA256 || info.Size != s.Bytes {
			return refuse("shard %s of manifest %.12s (sha256 %.12s, %d bytes) is not in bucket %s as listed (%v); push the packed dataset again",
				s.Name, man.SHA256, s.SHA256, s.Bytes, st.Bucket(), statSays(info, err))
		}
	}
	return man, nil
}

// handleDataManifest answers with the registered dataset from this voter's FSM
// (any voter).
func (n *Node) handleDataManifest(m *nats.Msg) {
	var out natsutil.DataManifestReply
	n.fsm.View(func(s *State) { out = DataManifestOf(s) })
	n.reply(m, out)
}
