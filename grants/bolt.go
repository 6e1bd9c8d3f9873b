package grants

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// boltLockTimeout is how long opening waits for another process's lock
// on the file (Caddy holds it while running; the CLI then uses the admin
// API instead).
const boltLockTimeout = time.Second

// OpenBolt opens (creating it if needed) the embedded store at path: one
// node, data kept across restarts.
func OpenBolt(path string) (Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("grants: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: boltLockTimeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s", ErrStoreLocked, path)
		}
		return nil, fmt.Errorf("grants: opening %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("grants: %s: %w", path, err)
	}
	s := newKVStore(boltKV{db})
	_ = s.purge(time.Now()) // a purge that fails is retried by the store's own ticker
	return s, nil
}

type boltKV struct{ db *bolt.DB }

func (b boltKV) view(fn func(kvTx) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (b boltKV) update(fn func(kvTx) error) error {
	return b.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (b boltKV) close() error { return b.db.Close() }

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) get(b, k string) []byte {
	v := t.tx.Bucket([]byte(b)).Get([]byte(k))
	if v == nil {
		return nil
	}
	// bbolt's slices are only valid within the transaction.
	return append([]byte{}, v...)
}

func (t boltTx) put(b, k string, v []byte) error {
	if v == nil {
		v = []byte{}
	}
	return t.tx.Bucket([]byte(b)).Put([]byte(k), v)
}

func (t boltTx) del(b, k string) error { return t.tx.Bucket([]byte(b)).Delete([]byte(k)) }

func (t boltTx) scan(b, prefix string, fn func(string, []byte) error) error {
	c := t.tx.Bucket([]byte(b)).Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && len(k) >= len(p) && string(k[:len(p)]) == prefix; k, v = c.Next() {
		if err := fn(string(k), append([]byte{}, v...)); err != nil {
			return err
		}
	}
	return nil
}
