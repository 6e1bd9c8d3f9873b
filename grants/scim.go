package grants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// SCIM users are what an HR or IAM provisioning system (a SCIM 2.0
// client: Entra ID, Okta, HelloID) told Gatehouse about its people:
// who each one is (userName, externalId, emails) and whether they may
// sign in (active). A user that is not active, or that was deleted, is
// refused at sign-in for as long as the record says so; the gate decides
// how a record links to the users who sign in (by email, or by sub).

// ErrConflict: another SCIM user already has this userName.
var ErrConflict = errors.New("grants: conflict")

// SCIMUser is one user as the provisioning system recorded it. Only
// these attributes are kept.
type SCIMUser struct {
	ID         string      `json:"id"`
	UserName   string      `json:"userName"`
	ExternalID string      `json:"externalId,omitempty"`
	Emails     []SCIMEmail `json:"emails,omitempty"`
	Active     bool        `json:"active"`
	// Deleted is when the provisioning system deleted the user (unix
	// seconds), 0 if it did not. A deleted user's record stays, so that
	// its sign-ins stay refused, until a new user takes its userName.
	Deleted  int64 `json:"deleted,omitempty"`
	Created  int64 `json:"created"`  // unix seconds
	Modified int64 `json:"modified"` // unix seconds
	// Version counts the writes of the record, from 1.
	Version int64 `json:"version"`
}

// SCIMEmail is one of a SCIM user's email addresses.
type SCIMEmail struct {
	Value   string `json:"value"`
	Type    string `json:"type,omitempty"`
	Primary bool   `json:"primary,omitempty"`
}

// SCIMFilter selects SCIM users; every field set must match, and the
// zero filter selects every user. Deleted users are included.
type SCIMFilter struct {
	UserName   string // compared ignoring case
	ExternalID string // compared exactly
	// Email matches a user whose userName or primary email (the only
	// email, when none is marked primary) is this address, ignoring
	// case: the users a sign-in with this verified email is linked to.
	Email string
}

// Bounds of a SCIM user.
const (
	MaxSCIMString = 256 // userName, externalId, an email's value and type: characters
	MaxSCIMEmails = 10
)

// PrimaryEmail is the user's primary email: the one marked primary, or
// the only one; "" if neither.
func (u *SCIMUser) PrimaryEmail() string {
	for _, e := range u.Emails {
		if e.Primary {
			return e.Value
		}
	}
	if len(u.Emails) == 1 {
		return u.Emails[0].Value
	}
	return ""
}

// LinkEmails are the addresses a sign-in's verified email is compared
// with (SCIMFilter.Email): the userName and the primary email, in
// lowercase.
func (u *SCIMUser) LinkEmails() []string {
	out := []string{strings.ToLower(u.UserName)}
	if p := strings.ToLower(u.PrimaryEmail()); p != "" && p != out[0] {
		out = append(out, p)
	}
	return out
}

// matches reports whether u is selected by f.
func (u *SCIMUser) matches(f SCIMFilter) bool {
	return (f.UserName == "" || strings.EqualFold(u.UserName, f.UserName)) &&
		(f.ExternalID == "" || u.ExternalID == f.ExternalID) &&
		(f.Email == "" || slices.Contains(u.LinkEmails(), strings.ToLower(f.Email)))
}

// CheckSCIMUser checks what a provisioning system may set: a userName,
// and no string too long or holding control characters.
func CheckSCIMUser(u *SCIMUser) error {
	if u.UserName == "" {
		return fmt.Errorf("%w: userName is required", ErrInvalid)
	}
	if err := checkSCIMString("userName", u.UserName); err != nil {
		return err
	}
	if err := checkSCIMString("externalId", u.ExternalID); err != nil {
		return err
	}
	if len(u.Emails) > MaxSCIMEmails {
		return fmt.Errorf("%w: at most %d emails", ErrInvalid, MaxSCIMEmails)
	}
	primary := 0
	for _, e := range u.Emails {
		if e.Value == "" {
			return fmt.Errorf("%w: an email needs a value", ErrInvalid)
		}
		if err := checkSCIMString("emails.value", e.Value); err != nil {
			return err
		}
		if err := checkSCIMString("emails.type", e.Type); err != nil {
			return err
		}
		if e.Primary {
			primary++
		}
	}
	if primary > 1 {
		return fmt.Errorf("%w: at most one email may be primary", ErrInvalid)
	}
	return nil
}

func checkSCIMString(name, s string) error {
	switch {
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not UTF-8", ErrInvalid, name)
	case utf8.RuneCountInString(s) > MaxSCIMString:
		return fmt.Errorf("%w: %s is longer than %d characters", ErrInvalid, name, MaxSCIMString)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: %s holds a control character", ErrInvalid, name)
	}
	return nil
}

// nameKey is the form in which userNames are unique.
func nameKey(userName string) string { return strings.ToLower(userName) }

// stamp sets what the store decides of a record written at now.
func (u *SCIMUser) stamp(prev *SCIMUser, now time.Time) {
	u.Created, u.Version = now.Unix(), 1
	if prev != nil {
		u.Created, u.Version = prev.Created, prev.Version+1
	}
	u.Modified = now.Unix()
}

func sortSCIMUsers(us []SCIMUser) {
	sort.Slice(us, func(i, j int) bool {
		if us[i].Created != us[j].Created {
			return us[i].Created < us[j].Created
		}
		return us[i].ID < us[j].ID
	})
}

// scimTerm is one value a user is found by: of a kind ('n' userName, 'x'
// externalId, 'e' a link email) and in the form compared.
type scimTerm struct {
	kind  byte
	value string
}

// scimTerms are the values u is found by.
func scimTerms(u *SCIMUser) []scimTerm {
	terms := []scimTerm{{'n', nameKey(u.UserName)}}
	if u.ExternalID != "" {
		terms = append(terms, scimTerm{'x', u.ExternalID})
	}
	for _, e := range u.LinkEmails() {
		terms = append(terms, scimTerm{'e', e})
	}
	return terms
}

// filterTerm is the term an index lookup for f starts from; ok false:
// f selects every user.
func filterTerm(f SCIMFilter) (t scimTerm, ok bool) {
	switch {
	case f.ExternalID != "":
		return scimTerm{'x', f.ExternalID}, true
	case f.UserName != "":
		return scimTerm{'n', nameKey(f.UserName)}, true
	case f.Email != "":
		return scimTerm{'e', strings.ToLower(f.Email)}, true
	}
	return scimTerm{}, false
}

// The embedded stores' buckets of SCIM users. An index key is the term's
// kind, its value and the id, each followed by "\x00" but the last: no
// value indexed holds a control character (CheckSCIMUser).
const (
	bSCIM      = "scim_users" // id → SCIMUser
	bSCIMNames = "scim_names" // lowercase userName → id of the user that claimed it
	bSCIMIndex = "scim_index" // scimIndexKey → ""
)

func (t scimTerm) prefix() string               { return string(t.kind) + "\x00" + t.value + "\x00" }
func scimIndexKey(t scimTerm, id string) string { return t.prefix() + id }

func scimIndexKeys(u *SCIMUser) []string {
	var keys []string
	for _, t := range scimTerms(u) {
		keys = append(keys, scimIndexKey(t, u.ID))
	}
	return keys
}

func getSCIM(tx kvTx, id string) (*SCIMUser, error) {
	b := tx.get(bSCIM, id)
	if b == nil {
		return nil, ErrNotFound
	}
	var u SCIMUser
	if err := json.Unmarshal(b, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

func putSCIM(tx kvTx, u *SCIMUser) error {
	b, _ := json.Marshal(u)
	if err := tx.put(bSCIM, u.ID, b); err != nil {
		return err
	}
	for _, k := range scimIndexKeys(u) {
		if err := tx.put(bSCIMIndex, k, nil); err != nil {
			return err
		}
	}
	return nil
}

// dropSCIM removes a user's record and index entries, and its userName
// if it holds it.
func dropSCIM(tx kvTx, u *SCIMUser) error {
	for _, k := range scimIndexKeys(u) {
		if err := tx.del(bSCIMIndex, k); err != nil {
			return err
		}
	}
	if string(tx.get(bSCIMNames, nameKey(u.UserName))) == u.ID {
		if err := tx.del(bSCIMNames, nameKey(u.UserName)); err != nil {
			return err
		}
	}
	return tx.del(bSCIM, u.ID)
}

// claimName gives the userName of u to u: ErrConflict if a user not
// deleted holds it; a deleted user holding it is dropped.
func claimName(tx kvTx, u *SCIMUser) error {
	k := nameKey(u.UserName)
	if holder := string(tx.get(bSCIMNames, k)); holder != "" && holder != u.ID {
		h, err := getSCIM(tx, holder)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		case h.Deleted == 0 && nameKey(h.UserName) == k:
			return fmt.Errorf("%w: another user has the userName %q", ErrConflict, u.UserName)
		case h.Deleted != 0:
			if err := dropSCIM(tx, h); err != nil {
				return err
			}
		}
	}
	return tx.put(bSCIMNames, k, []byte(u.ID))
}

func (s *kvStore) PutSCIMUser(_ context.Context, u SCIMUser, now time.Time) (SCIMUser, error) {
	if err := CheckSCIMUser(&u); err != nil {
		return u, err
	}
	u.Deleted = 0
	err := s.db.update(func(tx kvTx) error {
		var prev *SCIMUser
		if u.ID == "" {
			u.ID = newID()
		} else {
			var err error
			if prev, err = getSCIM(tx, u.ID); err != nil {
				return err
			}
			if prev.Deleted != 0 {
				return ErrNotFound
			}
		}
		u.stamp(prev, now)
		if err := claimName(tx, &u); err != nil {
			return err
		}
		if prev != nil {
			// The old index entries go; the old userName is left to
			// whoever claims it next (its holder no longer has it).
			for _, k := range scimIndexKeys(prev) {
				if err := tx.del(bSCIMIndex, k); err != nil {
					return err
				}
			}
		}
		return putSCIM(tx, &u)
	})
	return u, err
}

func (s *kvStore) SCIMUser(_ context.Context, id string) (SCIMUser, error) {
	var u SCIMUser
	err := s.db.view(func(tx kvTx) error {
		p, err := getSCIM(tx, id)
		if err == nil {
			u = *p
		}
		return err
	})
	return u, err
}

func (s *kvStore) SCIMUsers(_ context.Context, f SCIMFilter) ([]SCIMUser, error) {
	var out []SCIMUser
	err := s.db.view(func(tx kvTx) error {
		t, ok := filterTerm(f)
		if !ok {
			return tx.scan(bSCIM, "", func(_ string, b []byte) error {
				var u SCIMUser
				if json.Unmarshal(b, &u) == nil {
					out = append(out, u)
				}
				return nil
			})
		}
		prefix := t.prefix()
		return tx.scan(bSCIMIndex, prefix, func(k string, _ []byte) error {
			id := k[len(prefix):]
			if strings.Contains(id, "\x00") {
				return nil // another value that starts with this one
			}
			if u, err := getSCIM(tx, id); err == nil && u.matches(f) {
				out = append(out, *u)
			}
			return nil
		})
	})
	sortSCIMUsers(out)
	return out, err
}

func (s *kvStore) DeleteSCIMUser(_ context.Context, id string, now time.Time) (SCIMUser, error) {
	var u SCIMUser
	err := s.db.update(func(tx kvTx) error {
		p, err := getSCIM(tx, id)
		if err != nil {
			return err
		}
		if p.Deleted != 0 {
			return ErrNotFound
		}
		u = *p
		u.stamp(p, now)
		u.Active, u.Deleted = false, now.Unix()
		return putSCIM(tx, &u)
	})
	return u, err
}
