package grants

import (
	"errors"
	"sort"
	"strings"
	"sync"
)

// memKV is a kv in memory: the store used without a grants line (one
// node, lost on restart).
type memKV struct {
	mu      sync.RWMutex
	buckets map[string]map[string][]byte
}

// NewMemory returns an in-memory store.
func NewMemory() Store {
	m := &memKV{buckets: map[string]map[string][]byte{}}
	for _, b := range allBuckets {
		m.buckets[b] = map[string][]byte{}
	}
	return newKVStore(m)
}

func (m *memKV) view(fn func(kvTx) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return fn(memTx{m, false})
}

func (m *memKV) update(fn func(kvTx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Apply to a copy of the touched buckets, so a failed update changes
	// nothing.
	tx := &memWriteTx{m: m, changes: map[string]map[string][]byte{}}
	if err := fn(tx); err != nil {
		return err
	}
	for b, kvs := range tx.changes {
		for k, v := range kvs {
			if v == nil {
				delete(m.buckets[b], k)
			} else {
				m.buckets[b][k] = v
			}
		}
	}
	return nil
}

func (m *memKV) close() error { return nil }

type memTx struct {
	m        *memKV
	writable bool
}

func (t memTx) get(b, k string) []byte { return t.m.buckets[b][k] }
func (t memTx) put(string, string, []byte) error {
	return errors.New("grants: write in a read transaction")
}
func (t memTx) del(string, string) error { return errors.New("grants: write in a read transaction") }
func (t memTx) scan(b, prefix string, fn func(string, []byte) error) error {
	return scanMap(t.m.buckets[b], prefix, fn)
}

type memWriteTx struct {
	m       *memKV
	changes map[string]map[string][]byte
}

func (t *memWriteTx) get(b, k string) []byte {
	if v, ok := t.changes[b][k]; ok {
		return v
	}
	return t.m.buckets[b][k]
}

func (t *memWriteTx) put(b, k string, v []byte) error {
	if v == nil {
		v = []byte{}
	}
	if t.changes[b] == nil {
		t.changes[b] = map[string][]byte{}
	}
	t.changes[b][k] = append([]byte{}, v...)
	return nil
}

func (t *memWriteTx) del(b, k string) error {
	if t.changes[b] == nil {
		t.changes[b] = map[string][]byte{}
	}
	t.changes[b][k] = nil
	return nil
}

func (t *memWriteTx) scan(b, prefix string, fn func(string, []byte) error) error {
	merged := map[string][]byte{}
	for k, v := range t.m.buckets[b] {
		merged[k] = v
	}
	for k, v := range t.changes[b] {
		if v == nil {
			delete(merged, k)
		} else {
			merged[k] = v
		}
	}
	return scanMap(merged, prefix, fn)
}

func scanMap(m map[string][]byte, prefix string, fn func(string, []byte) error) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(k, m[k]); err != nil {
			return err
		}
	}
	return nil
}
