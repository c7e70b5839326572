package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/coordinator"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/worker"
)

// clusterFlags are the NATS flags every cluster command shares; set flags override
// the cluster.nats config keys.
type clusterFlags struct {
	url, job, user, password, token, nkeySeed, tlsCA, tlsCert, tlsKey string
}

func (f *clusterFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.url, "nats", "", "NATS server URL(s), comma-separated (cluster.nats.url)")
	fl.StringVar(&f.job, "job", "", "job name (cluster.nats.job)")
	fl.StringVar(&f.user, "nats-user", "", "NATS user (cluster.nats.user)")
	fl.StringVar(&f.password, "nats-password", "", "NATS password (cluster.nats.password; prefer SAMDIFFSR_CLUSTER_NATS_PASSWORD)")
	fl.StringVar(&f.token, "nats-token", "", "NATS token (cluster.nats.token; prefer SAMDIFFSR_CLUSTER_NATS_TOKEN)")
	fl.StringVar(&f.nkeySeed, "nats-nkey", "", "file holding an nkey seed (cluster.nats.nkey_seed_file)")
	fl.StringVar(&f.tlsCA, "nats-tls-ca", "", "CA file to verify the NATS server (cluster.nats.tls_ca)")
	fl.StringVar(&f.tlsCert, "nats-tls-cert", "", "client certificate (cluster.nats.tls_cert)")
	fl.StringVar(&f.tlsKey, "nats-tls-key", "", "client key (cluster.nats.tls_key)")
}

func (f *clusterFlags) apply(c *configs.NATS) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&c.URL, f.url)
	set(&c.Job, f.job)
	set(&c.User, f.user)
	set(&c.Password, f.password)
	set(&c.Token, f.token)
	set(&c.NKeySeedFile, f.nkeySeed)
	set(&c.TLSCA, f.tlsCA)
	set(&c.TLSCert, f.tlsCert)
	set(&c.TLSKey, f.tlsKey)
}

// connectCluster connects to cluster.nats.url.
func connectCluster(ctx context.Context, c configs.NATS, name string) (*nats.Conn, error) {
	if c.URL == "" {
		return nil, &exitError{code: 2, msg: "no NATS server: pass --nats nats://HOST:PORT or set cluster.nats.url"}
	}
	return natsutil.Connect(ctx, c, nil, name)
}

// serveMetrics serves reg on addr at /metrics until ctx ends (nothing when addr is "").
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics on %s (cluster.metrics_addr): %w", addr, err)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("serving Prometheus metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return nil
}

// coordinatorOptions turns the config into coordinator options.
func coordinatorOptions(cfg configs.Config, nc *nats.Conn, log *slog.Logger, reg prometheus.Registerer) coordinator.Options {
	cc := cfg.Cluster.Coordinator
	return coordinator.Options{ID: cc.ID, RaftAddr: cc.RaftAddr, DataDir: cc.DataDir, Bootstrap: cc.Bootstrap, Join: cc.Join,
		Conn: nc, Job: cfg.Cluster.NATS.Job, MaxDeliver: cc.MaxDeliver, LeaseTTL: cc.LeaseTTL,
		AckWait: cfg.Cluster.Worker.AckWait, Heartbeat: cfg.Cluster.Worker.Heartbeat, Train: cfg.Cluster.Train, Log: log, Metrics: reg}
}

func newCoordinatorCmd(a *app) *cobra.Command {
	var (
		nf                         clusterFlags
		id, raftAddr, dir, metrics string
		bootstrap                  bool
		join                       []string
	)
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run a raft coordinator voter (job spec, manifest, mask-task ledger, dispatch)",
		Long: `coordinator runs one voter of the raft-replicated coordinator. Start the first voter
with --bootstrap and the others with --join naming an existing voter; the leader
dispatches mask tasks over NATS JetStream and commits every result once. Without
--nats (and cluster.nats.url) it starts an embedded NATS server: in-process only unless
cluster.nats.listen is set.`,
		Example: `  samdiffsr coordinator --id c1 --raft-addr 127.0.0.1:7401 --data state/c1 --nats nats://127.0.0.1:4222 --bootstrap
  samdiffsr coordinator --id c2 --raft-addr 127.0.0.1:7402 --data state/c2 --nats nats://127.0.0.1:4222 --join c1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			nf.apply(&cfg.Cluster.NATS)
			cc := &cfg.Cluster.Coordinator
			fl := cmd.Flags()
			if fl.Changed("id") {
				cc.ID = id
			}
			if fl.Changed("raft-addr") {
				cc.RaftAddr = raftAddr
			}
			if fl.Changed("data") {
				cc.DataDir = dir
			}
			if fl.Changed("bootstrap") {
				cc.Bootstrap = bootstrap
			}
			if fl.Changed("join") {
				cc.Join = join
			}
			if fl.Changed("metrics-addr") {
				cfg.Cluster.MetricsAddr = metrics
			}
			if cc.Bootstrap && len(cc.Join) > 0 {
				return &exitError{code: 2, msg: "coordinator: give --bootstrap (first voter) or --join VOTER (the others), not both"}
			}
			if err := checkCoordinatorReachable(cfg); err != nil {
				return err
			}
			ctx := cmd.Context()
			var srv *server.Server
			if cfg.Cluster.NATS.URL == "" {
				store := cfg.Cluster.NATS.StoreDir
				if store == "" {
					store = filepath.Join(cc.DataDir, "nats")
				}
				srv, err = natsutil.StartEmbedded(ctx, natsutil.EmbeddedOptions{NATS: cfg.Cluster.NATS, StoreDir: store})
				if err != nil {
					return err
				}
				defer srv.Shutdown()
				a.log.Info("embedded NATS", "listen", natsutil.ClientURL(srv), "store", store)
			}
			nc, err := natsutil.Connect(ctx, cfg.Cluster.NATS, srv, "coordinator "+cc.ID)
			if err != nil {
				return err
			}
			defer nc.Close()
			reg := prometheus.NewRegistry()
			node, err := coordinator.Start(ctx, coordinatorOptions(cfg, nc, a.log, reg))
			if err != nil {
				return err
			}
			if err := serveMetrics(ctx, cfg.Cluster.MetricsAddr, reg, a.log); err != nil {
				node.Close()
				return err
			}
			a.log.Info("coordinator up", "id", cc.ID, "raft_addr", cc.RaftAddr, "job", cfg.Cluster.NATS.Job)
			<-ctx.Done()
			a.log.Info("coordinator stopping", "id", cc.ID)
			return node.Close()
		},
	}
	nf.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&id, "id", "", "voter id (cluster.coordinator.id)")
	fl.StringVar(&raftAddr, "raft-addr", "", "raft TCP address, a private HOST:PORT (cluster.coordinator.raft_addr)")
	fl.StringVar(&dir, "data", "", "raft data folder (cluster.coordinator.data_dir)")
	fl.BoolVar(&bootstrap, "bootstrap", false, "start a new cluster with this voter (cluster.coordinator.bootstrap)")
	fl.StringSliceVar(&join, "join", nil, "ids of existing voters to ask to add this one (cluster.coordinator.join)")
	fl.StringVar(&metrics, "metrics-addr", "", "serve Prometheus /metrics on HOST:PORT (cluster.metrics_addr)")
	cmd.AddCommand(newCoordinatorRemoveCmd(a), newCoordinatorSubmitCmd(a))
	return cmd
}

// checkCoordinatorReachable refuses, before anything is created, a voter that could
// never do anything: one with no raft state that neither bootstraps nor joins, or one
// whose embedded NATS server nobody outside this process can reach.
func checkCoordinatorReachable(cfg configs.Config) error {
	cc := cfg.Cluster.Coordinator
	if !cc.Bootstrap && len(cc.Join) == 0 {
		if _, err := os.Stat(filepath.Join(cc.DataDir, "raft.db")); err != nil {
			return &exitError{code: 2, msg: fmt.Sprintf("coordinator: %s holds no raft state, so this voter has no cluster: start the first voter with --bootstrap and the others with --join ID (see `samdiffsr coordinator --help`); for everything on one machine use `samdiffsr run`", cc.DataDir)}
		}
	}
	if cfg.Cluster.NATS.URL == "" && cfg.Cluster.NATS.Listen == "" {
		return &exitError{code: 2, msg: "coordinator: no NATS server: without --nats nats://HOST:PORT (cluster.nats.url) the embedded server would be reachable only inside this process, so no worker or other voter could reach it; pass --nats, or set cluster.nats.listen to serve one"}
	}
	return nil
}

func newCoordinatorRemoveCmd(a *app) *cobra.Command {
	var nf clusterFlags
	cmd := &cobra.Command{
		Use:     "remove-voter ID",
		Short:   "Remove a voter from the raft configuration (asks the leader)",
		Example: `  samdiffsr coordinator remove-voter c3 --nats nats://127.0.0.1:4222`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			nf.apply(&cfg.Cluster.NATS)
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			nc, err := connectCluster(ctx, cfg.Cluster.NATS, "samdiffsr coordinator remove-voter")
			if err != nil {
				return err
			}
			defer nc.Close()
			st, err := worker.FarmStatus(ctx, nc, cfg.Cluster.NATS.Job)
			if err != nil {
				return err
			}
			if st.Leader == "" {
				return errors.New("coordinator: no leader right now; retry")
			}
			var rep natsutil.Reply
			names := natsutil.NamesFor(cfg.Cluster.NATS.Job)
			if err := natsutil.Request(ctx, nc, names.CoordNode(st.Leader, "member"), natsutil.MemberRequest{ID: args[0], Remove: true}, &rep, 20*time.Second); err != nil {
				return err
			}
			if rep.Err != "" {
				return fmt.Errorf("coordinator: remove %s: %s", args[0], rep.Err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed voter %s\n", args[0])
			return nil
		},
	}
	nf.add(cmd)
	return cmd
}

// farmProcesses returns the factory of FarmProcesses for a farm worker with slots
// tasks at once: the masks.segmenter of the config, as `samdiffsr masks` makes it.
func farmProcesses(cfg configs.Config, slots int) (func() (worker.FarmProcess, error), error) {
	newSeg, err := maskSegmenterFactory(cfg.Masks.Segmenter, cfg.Masks, slots)
	if err != nil {
		return nil, err
	}
	return func() (worker.FarmProcess, error) {
		seg, err := newSeg()
		if err != nil {
			return nil, err
		}
		return worker.NewFarmProcess(seg, cfg.Data.MaxPixels), nil
	}, nil
}

// workerID is a default worker id: host and process id.
func workerID() string {
	h, _ := os.Hostname()
	h, _, _ = strings.Cut(h, ".")
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}
