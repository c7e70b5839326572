package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// What every voter serves, leader or not: its status (a follower adds the leader's
// live training part), ledger pages, the registries' listings, and the per-voter
// membership subject. The leader's write duties are in leader*.go.

// subscribeAll installs the handlers every voter serves: status, ledger pages and
// the per-voter membership subject (a follower redirects to the leader).
func (n *Node) subscribeAll() error {
	nc := n.opts.Conn
	subs := []struct {
		subj, queue string
		h           nats.MsgHandler
	}{
		{n.names.Coord("status"), "status", n.handleStatus},
		{n.names.CoordNode(n.opts.ID, "status"), "", n.handleStatus},
		{n.names.Coord("ledger"), "ledger", n.handleLedger},
		{n.names.Coord("checkpoints.list"), "checkpoints", n.handleCheckpoints},
		{n.names.Coord("data.manifest"), "data", n.handleDataManifest},
		{n.names.CoordNode(n.opts.ID, "member"), "", n.handleMember},
	}
	for _, s := range subs {
		sub, err := nc.QueueSubscribe(s.subj, s.queue, s.h)
		if err != nil {
			return fmt.Errorf("coordinator: subscribe %s: %w", s.subj, err)
		}
		n.subs = append(n.subs, sub)
	}
	return nc.Flush()
}

// noForward marks a status request one voter forwarded to the leader.
const noForward = "Samdiffsr-Status-Forwarded"

// handleStatus answers with this voter's status. A follower asks the leader for the
// live training part (ranks' progress, waiting workers), which only the leader holds;
// without an answer the training part is the replicated history alone.
func (n *Node) handleStatus(m *nats.Msg) {
	st := n.Status()
	if n.IsLeader() || st.Leader == "" || st.Leader == n.opts.ID || m.Header.Get(noForward) != "" {
		n.reply(m, st)
		return
	}
	go func() {
		req := nats.NewMsg(n.names.CoordNode(st.Leader, "status"))
		req.Header.Set(noForward, n.opts.ID)
		ctx, cancel := context.WithTimeout(n.ctx, time.Second)
		defer cancel()
		if rep, err := n.opts.Conn.RequestMsgWithContext(ctx, req); err == nil {
			var ls natsutil.Status
			if json.Unmarshal(rep.Data, &ls) == nil && ls.Train != nil {
				st.Train = ls.Train
			}
		}
		n.reply(m, st)
	}()
}

func (n *Node) handleLedger(m *nats.Msg) {
	var req natsutil.LedgerRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		n.reply(m, natsutil.Reply{Err: "bad ledger request: " + err.Error()})
		return
	}
	var page natsutil.LedgerPage
	n.fsm.View(func(s *State) { page = LedgerSlice(s, req) })
	n.reply(m, page)
}

func (n *Node) handleMember(m *nats.Msg) {
	var req natsutil.MemberRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.ID == "" {
		n.reply(m, natsutil.Reply{Err: fmt.Sprintf("bad membership request %q", m.Data)})
		return
	}
	if !n.IsLeader() {
		_, id := n.raft.LeaderWithID()
		n.reply(m, natsutil.Reply{Err: "not the leader", Leader: string(id), Retry: true})
		return
	}
	go func() {
		var f raft.IndexFuture
		if req.Remove {
			f = n.raft.RemoveServer(raft.ServerID(req.ID), 0, 10*time.Second)
		} else {
			f = n.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.Addr), 0, 10*time.Second)
		}
		if err := f.Error(); err != nil {
			n.replyResult(m, Result{}, err)
			return
		}
		res, err := n.Propose(n.ctx, Command{Kind: CmdMember, Member: &Member{ID: req.ID, Addr: req.Addr, Remove: req.Remove}})
		n.log.Info("membership changed", "voter", req.ID, "addr", req.Addr, "remove", req.Remove)
		n.replyResult(m, res, err)
	}()
}
