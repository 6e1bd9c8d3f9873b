package module

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// storeFlags are the flags every store command takes.
type storeFlags struct {
	op gate.StoreOp
	// admin, config and adapter find the admin API of a running Gatehouse
	// holding an embedded store, as `caddy stop` finds it.
	admin, config, adapter string
	policy                 string // grants add: the policy whose resources may be granted
	jsonOut                bool
}

func (f *storeFlags) bind(c *cobra.Command, user bool) {
	c.Flags().StringVar(&f.op.Store, "store", os.Getenv("GATEHOUSE_GRANTS"), "grant store URL, as the grants directive (default $GATEHOUSE_GRANTS)")
	c.Flags().StringVar(&f.admin, "admin", "", "admin API of the running Gatehouse holding an embedded (file://) store: host:port, or unix//path for a socket (default: from --config, else "+caddy.DefaultAdminListen+")")
	c.Flags().StringVarP(&f.config, "config", "c", "", "the running Gatehouse's config file, to find its admin API")
	c.Flags().StringVarP(&f.adapter, "adapter", "a", "", "name of the config adapter to use for --config")
	c.Flags().BoolVar(&f.jsonOut, "json", false, "print JSON")
	c.Flags().StringVar(&f.op.By, "by", os.Getenv("USER"), "who does this, for the audit log")
	if user {
		c.Flags().StringVar(&f.op.Email, "user", "", "the user's email (resolved through the store's index)")
		c.Flags().StringVar(&f.op.Sub, "sub", "", "the user's subject at the IdP")
		c.Flags().StringVar(&f.op.Iss, "iss", "", "the IdP's issuer URL (with --sub)")
	}
}

func grantsCommands() []*cobra.Command {
	grantsCmd := &cobra.Command{Use: "grants", Short: "List, add and revoke just-in-time grants"}
	var list, add, revoke, deprov, logout, reqs storeFlags

	listCmd := &cobra.Command{Use: "list", Short: "List grants (with --all, expired and revoked too: an access review)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			list.op.Op = "list-grants"
			return list.exec(c.OutOrStdout())
		}}
	list.bind(listCmd, true)
	listCmd.Flags().StringVar(&list.op.Resource, "resource", "", "only this resource")
	listCmd.Flags().BoolVar(&list.op.All, "all", false, "include expired and revoked grants")

	addCmd := &cobra.Command{Use: "add", Short: "Grant a user a resource for a while", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			add.op.Op = "add-grant"
			if err := checkResource(add.policy, add.op.Resource); err != nil {
				return err
			}
			return add.exec(c.OutOrStdout())
		}}
	add.bind(addCmd, true)
	addCmd.Flags().StringVar(&add.op.Resource, "resource", "", "the resource (as policies name it)")
	addCmd.Flags().StringVar(&add.policy, "policy", os.Getenv("GATEHOUSE_POLICY"), "policy directory: refuse a resource it does not name (default $GATEHOUSE_POLICY)")
	addCmd.Flags().StringVar(&add.op.Duration, "duration", "", "how long, such as 4h")
	addCmd.Flags().StringVar(&add.op.Reason, "reason", "", "why (audited)")
	addCmd.Flags().StringVar(&add.op.App, "app", "", "the app it is for (informational)")

	revokeCmd := &cobra.Command{Use: "revoke", Short: "Revoke a grant at once, on every node", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			revoke.op.Op = "revoke-grant"
			return revoke.exec(c.OutOrStdout())
		}}
	revoke.bind(revokeCmd, false)
	revokeCmd.Flags().StringVar(&revoke.op.ID, "id", "", "the grant id")
	revokeCmd.Flags().StringVar(&revoke.op.Reason, "reason", "", "why (audited)")
	grantsCmd.AddCommand(listCmd, addCmd, revokeCmd)

	usersCmd := &cobra.Command{Use: "users", Short: "De-provision users, log them out everywhere"}
	deprovCmd := &cobra.Command{Use: "deprovision", Short: "Revoke every session and grant of a user, reject their pending requests", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			deprov.op.Op = "deprovision"
			return deprov.exec(c.OutOrStdout())
		}}
	deprov.bind(deprovCmd, true)
	deprovCmd.Flags().StringVar(&deprov.op.Reason, "reason", "", "why (audited)")
	logoutCmd := &cobra.Command{Use: "logout", Short: "End every session of a user (they can sign in again)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			logout.op.Op = "logout-user"
			return logout.exec(c.OutOrStdout())
		}}
	logout.bind(logoutCmd, true)
	logoutCmd.Flags().StringVar(&logout.op.Reason, "reason", "", "why (audited)")
	usersCmd.AddCommand(deprovCmd, logoutCmd)

	requestsCmd := &cobra.Command{Use: "requests", Short: "Access requests"}
	reqsCmd := &cobra.Command{Use: "list", Short: "List access requests", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			reqs.op.Op = "list-requests"
			return reqs.exec(c.OutOrStdout())
		}}
	reqs.bind(reqsCmd, false)
	reqsCmd.Flags().StringVar(&reqs.op.Status, "status", "", "pending, approved, auto_approved or rejected")
	reqsCmd.Flags().StringVar(&reqs.op.App, "app", "", "only this app")
	requestsCmd.AddCommand(reqsCmd)

	var evidence storeFlags
	var since, format string
	evidenceCmd := &cobra.Command{Use: "evidence", Short: "Evidence for auditors: who had what, who approved it, and when"}
	exportCmd := &cobra.Command{Use: "export", Short: "Export the history of grants, approvals, de-provisionings and revocations (docs/evidence.md)",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			d, err := parseSince(since)
			if err != nil {
				return err
			}
			evidence.op.Op, evidence.op.Since = "evidence", time.Now().Add(-d).Unix()
			if evidence.op.Store == "" {
				return errors.New("--store is required (or set GATEHOUSE_GRANTS)")
			}
			res, err := evidence.run()
			if err != nil {
				return err
			}
			return gate.WriteEvidence(c.OutOrStdout(), res.History, format)
		}}
	evidence.bind(exportCmd, false)
	exportCmd.Flags().StringVar(&evidence.op.App, "app", "", "only this app (and operators' actions, which concern every app)")
	exportCmd.Flags().StringVar(&since, "since", "90d", "how far back: a duration such as 90d or 720h")
	exportCmd.Flags().StringVar(&format, "format", "csv", "csv or json")
	evidenceCmd.AddCommand(exportCmd)
	return []*cobra.Command{grantsCmd, usersCmd, requestsCmd, evidenceCmd, reviewsCommand()}
}

// parseSince reads a duration, with d for days (90d).
func parseSince(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > 100*365 {
			return 0, fmt.Errorf("--since %q: a number of days such as 90d, or a duration such as 720h", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--since %q: a number of days such as 90d, or a duration such as 720h", s)
	}
	return d, nil
}

// checkResource refuses a resource the policy in dir does not name as
// grantable; with no dir it checks nothing.
func checkResource(dir, resource string) error {
	if dir == "" || resource == "" {
		return nil
	}
	ctx := context.Background()
	rev, err := policies.Load(ctx, dir, policies.Options{})
	if err != nil {
		return fmt.Errorf("--policy %s: %w", dir, err)
	}
	known, err := rev.Grantable(ctx)
	if err != nil {
		return fmt.Errorf("--policy %s: %w: cannot check --resource (see docs/policy-contract.md)", dir, err)
	}
	if !slices.Contains(known, resource) {
		return fmt.Errorf("--resource %q: the policy in %s names no such resource; it can grant: %s", resource, dir, strings.Join(known, ", "))
	}
	return nil
}

func (f *storeFlags) exec(w io.Writer) error {
	if f.op.Store == "" {
		return errors.New("--store is required (or set GATEHOUSE_GRANTS)")
	}
	res, err := f.run()
	if err != nil {
		return err
	}
	if f.jsonOut {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return res.Print(w, time.Now())
}

// run performs the operation: through the running Gatehouse that holds an
// embedded store, else on the store directly.
func (f *storeFlags) run() (*gate.StoreOpResult, error) {
	su, err := grants.ParseURL(f.op.Store)
	if err != nil {
		return nil, err
	}
	if su.Kind != "file" {
		return runDirect(f.op)
	}
	// The running process may have been started elsewhere: name the file
	// absolutely.
	f.op.Store = "file://" + su.Path
	addr, why := f.adminAddress()
	if why != nil && !errors.Is(why, errAdminOff) {
		return nil, why
	}
	if why == nil {
		var res *gate.StoreOpResult
		res, why = adminStoreOp(addr, f.op)
		if why == nil {
			return res, nil
		}
		if !errors.Is(why, errNotHeld) && !errors.Is(why, errAdminUnreachable) {
			return nil, why // the running Gatehouse refused the operation
		}
	}
	// No process we can reach holds the file: open it here.
	if _, err := os.Stat(su.Path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no grant store at %s (Gatehouse creates it when it starts with this grants URL); %v", su.Path, why)
	}
	res, err := runDirect(f.op)
	if errors.Is(err, grants.ErrStoreLocked) {
		hint := ""
		if errors.Is(why, errAdminUnreachable) && f.admin == "" && f.config == "" {
			hint = "; give the admin address of the Gatehouse holding it with --admin, or its config with --config"
		}
		return nil, fmt.Errorf("%w: another process holds it (a running Gatehouse?), and %v%s", err, why, hint)
	}
	return res, err
}

// runDirect performs the operation on the store itself, writing its
// audit lines to stderr.
func runDirect(op gate.StoreOp) (*gate.StoreOpResult, error) {
	s, err := grants.Open(op.Store, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := op.Run(ctx, s, time.Now())
	writeEvents(cliAuditLogger(), "", res.Events...)
	recordHistory(cliAuditLogger(), s, "", res.Events)
	return res, err
}

// cliAuditLogger writes the audit lines of a direct operation to stderr,
// in the same shape as Caddy's.
func cliAuditLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{TimeKey: "ts", LevelKey: "level", NameKey: "logger", MessageKey: "msg",
		EncodeTime: zapcore.EpochTimeEncoder, EncodeLevel: zapcore.LowercaseLevelEncoder, EncodeDuration: zapcore.SecondsDurationEncoder})
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zapcore.InfoLevel)).Named(auditLogger)
}

var (
	// errAdminOff: the config turns the admin API off.
	errAdminOff = errors.New("its config turns the admin API off")
	// errAdminUnreachable: no admin API with Gatehouse's route answered.
	errAdminUnreachable = errors.New("the admin API did not answer")
	// errNotHeld: the admin API answered, but its process does not hold
	// the store.
	errNotHeld = errors.New("the Gatehouse at the admin API does not hold this store")
)

// adminAddress finds the admin API as Caddy's own commands do: --admin,
// else the admin address in --config, else the default. A config that
// turns the admin API off is errAdminOff.
func (f *storeFlags) adminAddress() (string, error) {
	if f.admin != "" || f.config == "" {
		return caddycmd.DetermineAdminAPIAddress(f.admin, nil, "", "")
	}
	cfg, file, _, err := caddycmd.LoadConfig(f.config, f.adapter)
	if err != nil {
		return "", fmt.Errorf("reading --config %s: %w", f.config, err)
	}
	var admin struct {
		Admin *caddy.AdminConfig `json:"admin"`
	}
	if err := json.Unmarshal(cfg, &admin); err != nil {
		return "", fmt.Errorf("reading --config %s: %w", f.config, err)
	}
	if admin.Admin != nil && admin.Admin.Disabled {
		return "", fmt.Errorf("%w (%s says admin off): turn it on, on a Unix socket for instance (admin unix//run/gatehouse/admin.sock), or stop Gatehouse to use the file directly", errAdminOff, file)
	}
	return caddycmd.DetermineAdminAPIAddress("", cfg, file, f.adapter)
}

// adminStoreOp sends the operation to the admin API at addr (see
// AdminAPI for the answer's shape).
func adminStoreOp(addr string, op gate.StoreOp) (*gate.StoreOpResult, error) {
	body, err := json.Marshal(op)
	if err != nil {
		return nil, err
	}
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodPost, storeOpPath, nil, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: tried %s: %v", errAdminUnreachable, addr, err)
	}
	defer resp.Body.Close()
	var ans storeOpAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&ans); err != nil {
		return nil, fmt.Errorf("%w: tried %s: its answer: %v", errAdminUnreachable, addr, err)
	}
	switch {
	case !ans.Held:
		return nil, fmt.Errorf("%w (%s)", errNotHeld, addr)
	case ans.Error != "":
		return nil, errors.New(ans.Error)
	case ans.Result == nil:
		return nil, fmt.Errorf("%w: tried %s: no result", errAdminUnreachable, addr)
	}
	return ans.Result, nil
}
