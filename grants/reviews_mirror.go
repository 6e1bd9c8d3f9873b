package grants

import (
	"context"
	"time"
)

// The nodes' mirror of resource revocations (access reviews): loaded with
// the other revocations before the cache serves anything and every
// MirrorEvery, reloaded when any node announces a change, so that the
// policy input's revoked_resources holds while the store is down and
// costs no store call on the request path.

// RevokedResources returns the user's resource revocations, of every
// app, from the mirror. The slice is shared: do not change it.
func (c *Cache) RevokedResources(u User) []ResourceRevocation {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if len(c.resources) == 0 {
		return nil
	}
	uk, ok := c.keys[u]
	if !ok {
		uk = u.Key()
	}
	return c.resources[uk]
}

// NoteResourceRevoked records a resource revocation this node made, at
// once (other nodes reload theirs when they hear of it).
func (c *Cache) NoteResourceRevoked(r ResourceRevocation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resGen++
	uk := r.User.Key()
	kept := make([]ResourceRevocation, 0, len(c.resources[uk])+1)
	for _, cur := range c.resources[uk] {
		if cur.App != r.App || cur.Resource != r.Resource {
			kept = append(kept, cur)
		}
	}
	c.resources[uk] = append(kept, r)
	delete(c.entries, uk)
}

// NoteResourceLifted records that this node lifted a resource
// revocation.
func (c *Cache) NoteResourceLifted(u User, app, resource string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resGen++
	uk := u.Key()
	var kept []ResourceRevocation
	for _, cur := range c.resources[uk] {
		if cur.App != app || cur.Resource != resource {
			kept = append(kept, cur)
		}
	}
	if len(kept) == 0 {
		delete(c.resources, uk)
	} else {
		c.resources[uk] = kept
	}
	delete(c.entries, uk)
}

// reloadResources reads every resource revocation from the store, after
// a node announced a change. A reload that fails leaves the mirror as it
// was (the next refresh tries again).
func (c *Cache) reloadResources() {
	c.refreshing.Lock()
	defer c.refreshing.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.mu.RLock()
	gen := c.resGen
	c.mu.RUnlock()
	rr, err := c.store.ResourceRevocations(ctx)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setResources(rr, gen)
}

// setResources replaces the mirror with what the store listed, read when
// the mirror's generation was gen. Changes this node noted meanwhile are
// kept until the next reload (the store had them too, or will). The
// caller holds c.mu.
func (c *Cache) setResources(rr []ResourceRevocation, gen uint64) {
	if c.resGen != gen {
		go c.reloadResources()
		return
	}
	c.resources = resourceRevocationsByUser(rr)
}
