package grants

import (
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/btree"
)

// memKV is a kv in memory: the store used without a grants line (one
// node, lost on restart). Each bucket is a B-tree, so a prefix scan (one
// user's grants) seeks to the prefix instead of reading every key. An
// update works on copy-on-write clones of the trees it touches and
// publishes them whole when it succeeds: a failed update changes nothing,
// and readers never wait for a writer (the background purge included).
type memKV struct {
	write sync.Mutex                 // one update at a time
	own   memBuckets                 // the writers' trees (under write), never read by a reader
	read  atomic.Pointer[memBuckets] // clones of own, for readers
}

type memBuckets map[string]*btree.BTreeG[memItem]

type memItem struct {
	k string
	v []byte
}

func lessItem(a, b memItem) bool { return a.k < b.k }

// NewMemory returns an in-memory store.
func NewMemory() Store {
	m := &memKV{own: memBuckets{}}
	for _, b := range allBuckets {
		m.own[b] = btree.NewG(32, lessItem)
	}
	m.publish(m.own)
	return newKVStore(m)
}

// publish gives readers clones of the writers' trees that changed: a
// tree is never cloned (by the next update) while a reader iterates it.
func (m *memKV) publish(changed memBuckets) {
	r := memBuckets{}
	if cur := m.read.Load(); cur != nil {
		r = maps.Clone(*cur)
	}
	for b := range changed {
		r[b] = m.own[b].Clone()
	}
	m.read.Store(&r)
}

func (m *memKV) view(fn func(kvTx) error) error {
	return fn(memTx{*m.read.Load()})
}

func (m *memKV) update(fn func(kvTx) error) error {
	m.write.Lock()
	defer m.write.Unlock()
	tx := &memWriteTx{own: m.own, touched: memBuckets{}}
	if err := fn(tx); err != nil {
		return err
	}
	if len(tx.touched) == 0 {
		return nil
	}
	m.own = maps.Clone(m.own)
	maps.Copy(m.own, tx.touched)
	m.publish(tx.touched)
	return nil
}

func (m *memKV) close() error { return nil }

type memTx struct{ buckets memBuckets }

func (t memTx) get(b, k string) []byte { return getItem(t.buckets[b], k) }
func (t memTx) put(string, string, []byte) error {
	return errors.New("grants: write in a read transaction")
}
func (t memTx) del(string, string) error { return errors.New("grants: write in a read transaction") }
func (t memTx) scan(b, prefix string, fn func(string, []byte) error) error {
	return scanTree(t.buckets[b], prefix, fn)
}

// memWriteTx writes to clones of the trees it touches.
type memWriteTx struct {
	own     memBuckets
	touched memBuckets
}

func (t *memWriteTx) tree(b string) *btree.BTreeG[memItem] {
	if c, ok := t.touched[b]; ok {
		return c
	}
	return t.own[b]
}

// clone is b's tree for writing.
func (t *memWriteTx) clone(b string) *btree.BTreeG[memItem] {
	c, ok := t.touched[b]
	if !ok {
		c = t.own[b].Clone()
		t.touched[b] = c
	}
	return c
}

func (t *memWriteTx) get(b, k string) []byte { return getItem(t.tree(b), k) }

func (t *memWriteTx) put(b, k string, v []byte) error {
	t.clone(b).ReplaceOrInsert(memItem{k, append([]byte{}, v...)})
	return nil
}

func (t *memWriteTx) del(b, k string) error {
	t.clone(b).Delete(memItem{k: k})
	return nil
}

func (t *memWriteTx) scan(b, prefix string, fn func(string, []byte) error) error {
	return scanTree(t.tree(b), prefix, fn)
}

func getItem(t *btree.BTreeG[memItem], k string) []byte {
	it, _ := t.Get(memItem{k: k})
	return it.v
}

// scanTree calls fn for the keys with prefix, in order, from a seek to
// the prefix.
func scanTree(t *btree.BTreeG[memItem], prefix string, fn func(string, []byte) error) error {
	var err error
	t.AscendGreaterOrEqual(memItem{k: prefix}, func(it memItem) bool {
		if !strings.HasPrefix(it.k, prefix) {
			return false
		}
		err = fn(it.k, it.v)
		return err == nil
	})
	return err
}
