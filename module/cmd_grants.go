package module

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// storeFlags are the flags every store command takes.
type storeFlags struct {
	op      gate.StoreOp
	admin   string
	jsonOut bool
}

func (f *storeFlags) bind(c *cobra.Command, user bool) {
	c.Flags().StringVar(&f.op.Store, "store", os.Getenv("GATEHOUSE_GRANTS"), "grant store URL, as the grants directive (default $GATEHOUSE_GRANTS)")
	c.Flags().StringVar(&f.admin, "admin", "localhost:2019", "admin API of the running Caddy, used for an embedded (file://) store it holds")
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
		RunE: func(c *cobra.Command, _ []string) error { add.op.Op = "add-grant"; return add.exec(c.OutOrStdout()) }}
	add.bind(addCmd, true)
	addCmd.Flags().StringVar(&add.op.Resource, "resource", "", "the resource (as policies name it)")
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
	return []*cobra.Command{grantsCmd, usersCmd, requestsCmd}
}

var errAdminUnreachable = errors.New("admin API unreachable")

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

// run performs the operation: through the running Caddy for an embedded
// store it holds, else directly.
func (f *storeFlags) run() (*gate.StoreOpResult, error) {
	if strings.HasPrefix(f.op.Store, "file://") {
		res, err := adminStoreOp(f.admin, f.op)
		if err == nil || !errors.Is(err, errAdminUnreachable) {
			return res, err
		}
	}
	s, err := grants.Open(f.op.Store, 5*time.Second)
	if errors.Is(err, grants.ErrStoreLocked) {
		return nil, fmt.Errorf("%w: is Caddy running with it? Then give its admin address with --admin", err)
	}
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := f.op.Run(ctx, s, time.Now())
	writeEvents(cliAuditLogger(), "", res.Events...)
	return res, err
}

// cliAuditLogger writes the audit lines of a direct operation to stderr,
// in the same shape as Caddy's.
func cliAuditLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{TimeKey: "ts", LevelKey: "level", NameKey: "logger", MessageKey: "msg",
		EncodeTime: zapcore.EpochTimeEncoder, EncodeLevel: zapcore.LowercaseLevelEncoder, EncodeDuration: zapcore.SecondsDurationEncoder})
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zapcore.InfoLevel)).Named(auditLogger)
}

func adminStoreOp(addr string, op gate.StoreOp) (*gate.StoreOpResult, error) {
	body, _ := json.Marshal(op)
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Post("http://"+addr+"/gatehouse/store", "application/json", bytes.NewReader(body))
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) || strings.Contains(err.Error(), "connection refused") {
			return nil, fmt.Errorf("%w: %v", errAdminUnreachable, err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%w: %s", errAdminUnreachable, strings.TrimSpace(string(b)))
	case resp.StatusCode != http.StatusOK:
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("admin API: %s: %s", resp.Status, b)
	}
	var res gate.StoreOpResult
	return &res, json.Unmarshal(b, &res)
}
