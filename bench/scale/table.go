package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// print writes the figures as a Markdown table, a column per store.
func (f figures) print(w io.Writer) {
	c := f.c
	row := func(what string, cell func(sf storeFigures) string) {
		cells := []string{what}
		for _, sf := range f.stores {
			cells = append(cells, cell(sf))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	head := []string{fmt.Sprintf("%d users with a grant, %d pending requests, %d sessions", c.users, c.pending, c.sessions)}
	for _, sf := range f.stores {
		head = append(head, sf.name)
	}
	fmt.Fprintf(w, "| %s |\n|---|%s\n", strings.Join(head, " | "), strings.Repeat("---:|", len(f.stores)))
	row(fmt.Sprintf("store size with the grants (Redis `used_memory` less client buffers, bbolt file on disk); a grant's JSON is %d B", f.grantSz), func(sf storeFigures) string {
		return fmt.Sprintf("%s (%s a user)", mib(sf.size[0]), each(sf.size[0], c.users))
	})
	row(fmt.Sprintf("+ %d pending requests", c.pending), func(sf storeFigures) string {
		return fmt.Sprintf("+%s (%s each)", mib(sf.size[1]-sf.size[0]), each(sf.size[1]-sf.size[0], c.pending))
	})
	row(fmt.Sprintf("+ %d revoked sessions", c.sessions), func(sf storeFigures) string {
		return fmt.Sprintf("+%s (%s each)", mib(sf.size[2]-sf.size[1]), each(sf.size[2]-sf.size[1], c.sessions))
	})
	row(fmt.Sprintf("filling the grants (`grants.Import`, %d a batch)", batch), func(sf storeFigures) string {
		return sf.fill.Round(100 * time.Millisecond).String()
	})
	row(fmt.Sprintf("`Lookup`, cold, from the store, %d random users: p50 / p99", c.lookups), func(sf storeFigures) string {
		return sf.lookup.String()
	})
	row("`Lookup` through `grants.Cache`, a miss (the store): p50 / p99", func(sf storeFigures) string { return sf.cacheMiss.String() })
	row("the same user again, a hit: p50 / p99", func(sf storeFigures) string { return sf.cacheHit.String() })
	row(fmt.Sprintf("`Requests` (pending) with %d pending", c.pending), func(sf storeFigures) string {
		return fmt.Sprintf("%s (%d listed)", ms(sf.pendingList), sf.pendingListed)
	})
	row("`Grants` (every active grant: the metrics gauge, every 15 s)", func(sf storeFigures) string {
		return fmt.Sprintf("%s (%d listed)", ms(sf.allGrants), sf.grantsListed)
	})
	row(fmt.Sprintf("`grants.Cache` heap: its mirror of the revocations in force (%d sessions; for Redis, with its subscription)", c.sessions), func(sf storeFigures) string {
		return mib(sf.mirrorBytes)
	})
	row(fmt.Sprintf("`grants.Cache` heap: %d sessions' entries (a user each)", c.sessions), func(sf storeFigures) string {
		return fmt.Sprintf("%s (%s each)", mib(sf.entryBytes), each(sf.entryBytes, c.sessions))
	})
	fmt.Fprintf(w, "\nGo heap of the process with both stores open and filled, after a collection: %s.\n", mib(int64(f.heap)))
}

func (l latencies) String() string { return fmt.Sprintf("%s / %s", us(l.p50), us(l.p99)) }

func us(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	}
	return ms(d)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mib(n int64) string {
	if n < 1<<20 && n > -1<<20 {
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}

func each(n int64, count int) string {
	if count == 0 {
		return "-"
	}
	return fmt.Sprintf("%d B", n/int64(count))
}
