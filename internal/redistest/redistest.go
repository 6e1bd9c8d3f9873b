// Package redistest starts real Redis topologies for tests, from Debian's
// redis-server on random loopback ports: one server, a Sentinel set (a
// master, a replica and three sentinels) and a Cluster (masters with
// replicas). Every process is stopped when the test ends, and dies with
// the test binary.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ACLUser and ACLPassword are the Redis user Gatehouse's tests connect as
// when a server runs with ACL: it may run exactly the commands Gatehouse
// uses, on its own keys and channels (see ACLRules and the docs).
const (
	ACLUser     = "gatehouse"
	ACLPassword = "gatehouse-test-password"
)

// ACLRules are the rules of ACLUser: the commands Gatehouse's store
// runs, on gh:* keys and channels only. docs/redis.md shows the same line
// for production.
const ACLRules = "on >" + ACLPassword + " ~gh:* resetchannels &gh:* -@all " +
	"+get +getdel +set +del +exists +expire +expireat +ttl +mget +hget +hset +hsetnx +hdel +hgetall +sadd +srem +smembers " +
	"+zadd +zincrby +zrange +zrangebyscore +zremrangebyscore +wait +publish +subscribe +unsubscribe " +
	"+ping +hello +auth +client|setname +info +role +cluster|slots +cluster|shards +cluster|nodes +readonly +readwrite +command"

// Options shape a server.
type Options struct {
	AppendOnly bool     // appendonly yes (production) rather than no persistence
	ACL        bool     // the default user is off; clients log in as ACLUser
	Args       []string // more redis-server arguments
}

// Server is one redis-server process.
type Server struct {
	t    testing.TB
	Port int
	Dir  string
	opts Options
	conf string // a config file (sentinels and cluster nodes rewrite theirs)
	cmd  *exec.Cmd
	done chan struct{}
	// started: the server ran once; a restart keeps its port.
	started bool
}

// Require fails the test unless redis-server (and redis-cli) are installed.
func Require(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is required: apt-get install -y redis-server (./test.sh installs it)", bin)
		}
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs a server.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	Require(t)
	s := newServer(t, o, "")
	s.Start()
	return s
}

func newServer(t testing.TB, o Options, conf string) *Server {
	t.Helper()
	s := &Server{t: t, Port: FreePort(t), Dir: t.TempDir(), opts: o}
	if conf != "" {
		s.conf = filepath.Join(s.Dir, "redis.conf")
		if err := os.WriteFile(s.conf, []byte(fmt.Sprintf("port %d\n%s", s.Port, conf)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.Stop)
	return s
}

// Addr is host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

// URL is the redis:// URL of the server, with ACLUser's credentials when
// the server runs with ACL.
func (s *Server) URL() string {
	if s.opts.ACL {
		return fmt.Sprintf("redis://%s:%s@%s/0", ACLUser, ACLPassword, s.Addr())
	}
	return "redis://" + s.Addr() + "/0"
}

// Client is an administrative client of this one server (the default
// user, or with ACL the user "admin").
func (s *Server) Client() *redis.Client {
	o := &redis.Options{Addr: s.Addr(), DialTimeout: 2 * time.Second, ReadTimeout: 10 * time.Second}
	if s.opts.ACL {
		o.Username, o.Password = "admin", ACLPassword
	}
	return redis.NewClient(o)
}

// Start (re)starts the process and waits until it answers PING. A first
// start whose port (or, for a cluster node, the bus port 10000 above it)
// was taken since FreePort chose it, by another test's process, tries
// other ports, up to three times.
func (s *Server) Start() {
	s.t.Helper()
	for try := 1; ; try++ {
		exited := s.start()
		if !exited {
			s.started = true
			return
		}
		if s.started || s.conf != "" || try == 3 || !strings.Contains(s.Log(), "Address already in use") {
			s.t.Fatalf("redis-server on %d exited at start:\n%s", s.Port, s.Log())
		}
		s.t.Logf("redis-server on %d: its port was taken since it was chosen; trying another", s.Port)
		_ = os.Remove(filepath.Join(s.Dir, "redis.log"))
		s.Port = FreePort(s.t)
	}
}

// start starts the process once and waits until it answers PING; it
// reports whether the process exited instead.
func (s *Server) start() (exited bool) {
	s.t.Helper()
	var args []string
	if s.conf != "" {
		args = append(args, s.conf)
	}
	args = append(args, "--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.Dir, "--save", "", "--daemonize", "no",
		"--loglevel", "warning", "--logfile", filepath.Join(s.Dir, "redis.log"))
	if s.opts.AppendOnly {
		args = append(args, "--appendonly", "yes")
	}
	if s.opts.ACL {
		args = append(append(args, "--user", "default", "off", "--user", ACLUser), strings.Fields(ACLRules)...)
		args = append(args, strings.Fields("--user admin on >"+ACLPassword+" ~* &* +@all")...)
	}
	args = append(args, s.opts.Args...)
	s.cmd = exec.Command("redis-server", args...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return true
		default:
		}
		if s.ping() == nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("redis-server on %d did not answer within 15s:\n%s", s.Port, s.Log())
	return false
}

func (s *Server) ping() error { return Ping(s.Addr()) }

// Ping checks that a redis-server at addr (host:port) is serving: it
// answers PING (+PONG, or -NOAUTH with ACL) within a second.
func Ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	// +PONG, or -NOAUTH with ACL: either way it is serving.
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}

// Log is the server's log file.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	return string(b)
}

// Stop shuts the server down cleanly (SIGTERM flushes the append-only
// file). It is also run at cleanup.
func (s *Server) Stop() { s.signal(syscall.SIGTERM, 10*time.Second) }

// Kill kills the server at once, as a crash would: nothing is flushed.
func (s *Server) Kill() { s.signal(syscall.SIGKILL, 10*time.Second) }

func (s *Server) signal(sig syscall.Signal, wait time.Duration) {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGCONT) // a paused server cannot shut down
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(wait):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Pause stops the process without closing its connections (SIGSTOP): to
// its peers it is alive but silent, as a stalled replica is.
func (s *Server) Pause() { _ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume undoes Pause.
func (s *Server) Resume() { _ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGCONT) }

// Restart stops and starts the server on the same port and directory.
func (s *Server) Restart() {
	s.Stop()
	s.Start()
}

// WaitFor polls cond every 20 ms until it holds or d passes.
func WaitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// --- Sentinel -----------------------------------------------------------

// SentinelSet is a master, one replica and three sentinels watching them
// (quorum 2, a master is down after 1 s without answers).
type SentinelSet struct {
	t         testing.TB
	Name      string
	Master    *Server // as started; after a failover, see MasterAddr
	Replica   *Server
	Sentinels []*Server
	opts      Options
}

// StartSentinel starts a Sentinel set.
func StartSentinel(t testing.TB, o Options) *SentinelSet {
	t.Helper()
	Require(t)
	set := &SentinelSet{t: t, Name: "gh", opts: o}
	// Both data servers can be master; each knows the other's password.
	data := o
	if o.ACL {
		data.Args = append(append([]string(nil), o.Args...), "--masteruser", ACLUser+"-repl", "--masterauth", ACLPassword)
		data.Args = append(data.Args, strings.Fields("--user "+ACLUser+"-repl on >"+ACLPassword+" +psync +replconf +ping --user sentinel on >"+ACLPassword+" allchannels +@all")...)
	}
	set.Master = Start(t, data)
	rep := data
	rep.Args = append(append([]string(nil), data.Args...), "--replicaof", "127.0.0.1", strconv.Itoa(set.Master.Port))
	set.Replica = Start(t, rep)
	conf := fmt.Sprintf("bind 127.0.0.1\nsentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %s 1000\n"+
		"sentinel failover-timeout %s 6000\nsentinel parallel-syncs %s 1\n", set.Name, set.Master.Port, set.Name, set.Name, set.Name)
	if o.ACL {
		conf += fmt.Sprintf("sentinel auth-user %s sentinel\nsentinel auth-pass %s %s\n", set.Name, set.Name, ACLPassword)
	}
	for range 3 {
		s := newServer(t, Options{Args: []string{"--sentinel"}}, conf)
		s.Start()
		set.Sentinels = append(set.Sentinels, s)
	}
	// Ready when the replica is in sync and every sentinel knows it.
	ctx := context.Background()
	ok := WaitFor(20*time.Second, func() bool {
		if !set.Master.replicaOnline() {
			return false
		}
		for _, s := range set.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
			reps, err := c.Replicas(ctx, set.Name).Result()
			c.Close()
			if err != nil || len(reps) == 0 {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("the sentinels did not see the replica within 20s:\n%s", set.Sentinels[0].Log())
	}
	return set
}

// URL is the grants URL of the set: the sentinels and the master's name.
func (set *SentinelSet) URL() string {
	user := ""
	if set.opts.ACL {
		user = ACLUser + ":" + ACLPassword + "@"
	}
	u := fmt.Sprintf("redis://%s%s/0?master_name=%s", user, set.Sentinels[0].Addr(), set.Name)
	for _, s := range set.Sentinels[1:] {
		u += "&addr=" + s.Addr()
	}
	return u
}

// MasterAddr asks a sentinel where the master is now.
func (set *SentinelSet) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, s := range set.Sentinels {
		if s.cmd == nil {
			continue
		}
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second})
		addr, err := c.GetMasterAddrByName(ctx, set.Name).Result()
		c.Close()
		if err == nil && len(addr) == 2 {
			return net.JoinHostPort(addr[0], addr[1]), nil
		}
		last = err
	}
	return "", fmt.Errorf("no sentinel names a master: %v", last)
}

// Server returns the data server at addr (the master or the replica).
func (set *SentinelSet) Server(addr string) *Server {
	if set.Replica.Addr() == addr {
		return set.Replica
	}
	return set.Master
}

// WaitFailover waits until the sentinels name a master other than old.
func (set *SentinelSet) WaitFailover(old string, d time.Duration) (string, bool) {
	var now string
	ok := WaitFor(d, func() bool {
		addr, err := set.MasterAddr(context.Background())
		now = addr
		return err == nil && addr != old
	})
	return now, ok
}

// --- Cluster ------------------------------------------------------------

// Cluster is a Redis Cluster of masters, each with replicas, made with
// redis-cli --cluster create (cluster-node-timeout 1 s).
type Cluster struct {
	t     testing.TB
	Nodes []*Server
	opts  Options
}

// StartCluster starts masters×(1+replicas) nodes and makes them a cluster.
func StartCluster(t testing.TB, masters, replicas int, o Options) *Cluster {
	t.Helper()
	Require(t)
	c := &Cluster{t: t, opts: o}
	var addrs []string
	for range masters * (1 + replicas) {
		n := o
		n.Args = append(append([]string(nil), o.Args...), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000", "--appendfsync", "everysec")
		if o.ACL {
			n.Args = append(n.Args, "--masteruser", ACLUser+"-repl", "--masterauth", ACLPassword)
			n.Args = append(n.Args, strings.Fields("--user "+ACLUser+"-repl on >"+ACLPassword+" +psync +replconf +ping")...)
		}
		s := Start(t, n)
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if o.ACL {
		args = append(args, "--user", "admin", "--pass", ACLPassword)
	}
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if !c.WaitOK(30 * time.Second) {
		t.Fatalf("the cluster did not become ok within 30s")
	}
	return c
}

// admin is a client of one node with every right.
func (c *Cluster) admin(s *Server) *redis.Client {
	o := &redis.Options{Addr: s.Addr(), DialTimeout: time.Second, ReadTimeout: 5 * time.Second}
	if c.opts.ACL {
		o.Username, o.Password = "admin", ACLPassword
	}
	return redis.NewClient(o)
}

// WaitOK waits until every running node says cluster_state:ok and knows
// every slot, and every master with replicas has one in sync.
func (c *Cluster) WaitOK(d time.Duration) bool {
	return WaitFor(d, func() bool {
		for _, s := range c.Nodes {
			if s.cmd == nil {
				continue
			}
			cl := c.admin(s)
			info, err := cl.ClusterInfo(context.Background()).Result()
			repl, rerr := cl.Info(context.Background(), "replication").Result()
			cl.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_assigned:16384") {
				return false
			}
			if rerr != nil || (strings.Contains(repl, "role:master") && !strings.Contains(repl, "connected_slaves:0") && !strings.Contains(repl, "state=online")) {
				return false
			}
		}
		return true
	})
}

// URL is the grants URL of the cluster.
func (c *Cluster) URL() string {
	user := ""
	if c.opts.ACL {
		user = ACLUser + ":" + ACLPassword + "@"
	}
	u := "redis+cluster://" + user + c.Nodes[0].Addr()
	for i, s := range c.Nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + s.Addr()
	}
	return u
}

// MasterFor returns the node that serves key's slot as master now.
func (c *Cluster) MasterFor(key string) *Server {
	slot := Slot(key)
	for _, s := range c.Nodes {
		if s.cmd == nil {
			continue
		}
		cl := c.admin(s)
		shards, err := cl.ClusterShards(context.Background()).Result()
		cl.Close()
		if err != nil {
			continue
		}
		for _, sh := range shards {
			for _, r := range sh.Slots {
				if int(r.Start) > slot || slot > int(r.End) {
					continue
				}
				for _, n := range sh.Nodes {
					if n.Role == "master" && n.Health == "online" {
						return c.byAddr(fmt.Sprintf("%s:%d", n.IP, n.Port))
					}
				}
			}
		}
	}
	return nil
}

// ReplicaOf returns a replica of master.
func (c *Cluster) ReplicaOf(master *Server) *Server {
	cl := c.admin(master)
	defer cl.Close()
	info, err := cl.Info(context.Background(), "replication").Result()
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(info, "\n") {
		// slave0:ip=127.0.0.1,port=40413,state=online,offset=…
		if !strings.HasPrefix(line, "slave") {
			continue
		}
		for _, kv := range strings.Split(line, ",") {
			if p, ok := strings.CutPrefix(kv, "port="); ok {
				return c.byAddr("127.0.0.1:" + strings.TrimSpace(p))
			}
		}
	}
	return nil
}

func (c *Cluster) byAddr(addr string) *Server {
	for _, s := range c.Nodes {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// Slot is Redis Cluster's hash slot of a key (CRC16 of the hash tag or
// the key, mod 16384).
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// replicaOnline reports whether a replica of this server is in sync.
func (s *Server) replicaOnline() bool {
	c := s.Client()
	defer c.Close()
	info, err := c.Info(context.Background(), "replication").Result()
	return err == nil && strings.Contains(info, "state=online")
}

// CheckACLLog fails the test if the server refused any command of
// ACLUser: the ACL of docs/redis.md must let Gatehouse do all it does.
func (s *Server) CheckACLLog(t testing.TB) {
	t.Helper()
	c := s.Client()
	defer c.Close()
	entries, err := c.ACLLog(context.Background(), 100).Result()
	if err != nil {
		t.Fatalf("ACL LOG on %s: %v", s.Addr(), err)
	}
	for _, e := range entries {
		if e.Username == ACLUser {
			t.Errorf("%s refused %s of %s: %s %s", s.Addr(), e.Object, e.Username, e.Reason, e.Context)
		}
	}
}

// InSync reports whether replica has everything master wrote (their
// replication offsets agree).
func InSync(master, replica *Server) bool {
	offset := func(s *Server, field string) string {
		c := s.Client()
		defer c.Close()
		info, err := c.Info(context.Background(), "replication").Result()
		if err != nil {
			return "?"
		}
		for line := range strings.SplitSeq(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
				return v
			}
		}
		return "?"
	}
	m := offset(master, "master_repl_offset")
	return m != "?" && m == offset(replica, "slave_repl_offset")
}

// Flush empties the server.
func (s *Server) Flush() {
	s.t.Helper()
	c := s.Client()
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		s.t.Fatalf("FLUSHALL on %s: %v", s.Addr(), err)
	}
}

// Flush empties the current master.
func (set *SentinelSet) Flush() {
	set.t.Helper()
	addr, err := set.MasterAddr(context.Background())
	if err != nil {
		set.t.Fatal(err)
	}
	set.Server(addr).Flush()
}

// Flush empties every master.
func (c *Cluster) Flush() {
	c.t.Helper()
	for _, s := range c.Nodes {
		if s.cmd == nil {
			continue
		}
		cl := c.admin(s)
		role, err := cl.Do(context.Background(), "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			if err := cl.FlushAll(context.Background()).Err(); err != nil {
				c.t.Fatalf("FLUSHALL on %s: %v", s.Addr(), err)
			}
		}
		cl.Close()
	}
}
