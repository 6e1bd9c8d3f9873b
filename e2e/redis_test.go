package e2e

import (
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/redistest"
)

// startRedis starts a real redis-server as production should run it:
// appendonly yes, and Gatehouse logging in as a user that may run only
// the commands Gatehouse uses, on its own keys (docs/redis.md).
func startRedis(t testing.TB) *redistest.Server {
	t.Helper()
	return redistest.Start(t, redistest.Options{AppendOnly: true, ACL: true})
}
