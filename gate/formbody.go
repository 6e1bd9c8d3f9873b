package gate

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strings"
	"unicode/utf8"
)

// The enctypes of HTML forms.
const (
	EnctypeURLEncoded = "application/x-www-form-urlencoded"
	EnctypeMultipart  = "multipart/form-data"
	enctypePlain      = "text/plain"
)

// maxFormFields bounds the fields of a kept form.
const maxFormFields = 2000

// errFormUnsupported: a form body that cannot be shown again exactly as
// it was sent (malformed, not UTF-8, a NUL, a field without a name).
var errFormUnsupported = errors.New("gate: form body cannot be re-sent as it was")

// FormField is one field of a kept form, in the order it was sent.
type FormField struct {
	Name  string `json:"n"`
	Value string `json:"v,omitempty"` // for a file: the name of the file chosen, if any
	// File is a file input: its content is never kept, so the user
	// chooses the file again on the resubmit page.
	File bool `json:"file,omitempty"`
	// Chosen says a file was chosen (File only).
	Chosen bool `json:"chosen,omitempty"`
}

// formEnctype is the enctype of a browser form's POST ("" for anything
// else) and its media type parameters.
func formEnctype(method, contentType string) (string, map[string]string) {
	if method != "POST" {
		return "", nil
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", nil
	}
	switch mt {
	case EnctypeURLEncoded, EnctypeMultipart, enctypePlain:
		return mt, params
	}
	return "", nil
}

// ParseFormBody reads a form body sent with contentType, as a browser
// sends it, into its fields in order. It accepts only what can be sent
// again exactly as it was from a page of hidden fields: UTF-8, no NUL,
// every field named; for multipart, parts without a Content-Type or
// with text/plain, and file parts (whose content is dropped).
// Everything else is errFormUnsupported.
func ParseFormBody(contentType string, body []byte) (enctype string, fields []FormField, err error) {
	enctype, params := formEnctype("POST", contentType)
	switch enctype {
	case EnctypeURLEncoded:
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			return "", nil, errFormUnsupported
		}
		fields, err = parseURLEncoded(body)
	case EnctypeMultipart:
		fields, err = parseMultipart(body, params["boundary"])
	default:
		return "", nil, errFormUnsupported
	}
	if err != nil {
		return "", nil, err
	}
	return enctype, fields, nil
}

// parseURLEncoded splits an application/x-www-form-urlencoded body.
// Unlike url.ParseQuery it keeps the order of the fields across names.
func parseURLEncoded(body []byte) ([]FormField, error) {
	var fields []FormField
	for part := range strings.SplitSeq(string(body), "&") {
		if part == "" {
			continue
		}
		if strings.Contains(part, ";") {
			// Some servers split on ';' too: a value with one unescaped
			// would not mean the same once the browser escapes it.
			return nil, errFormUnsupported
		}
		rawName, rawValue, _ := strings.Cut(part, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return nil, errFormUnsupported
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return nil, errFormUnsupported
		}
		if fields, err = appendField(fields, FormField{Name: name, Value: value}); err != nil {
			return nil, err
		}
	}
	return fields, nil
}

// parseMultipart reads a multipart/form-data body. File parts keep their
// field name and the file's name, not the content.
func parseMultipart(body []byte, boundary string) ([]FormField, error) {
	if boundary == "" {
		return nil, errFormUnsupported
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var fields []FormField
	for {
		// NextRawPart: browsers send parts as they are, and the body is
		// re-sent as it came (no Content-Transfer-Encoding decoding).
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return fields, nil
		}
		if err != nil {
			return nil, errFormUnsupported
		}
		disp, dp, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		if err != nil || disp != "form-data" {
			return nil, errFormUnsupported
		}
		content, err := io.ReadAll(p)
		if err != nil {
			return nil, errFormUnsupported
		}
		f := FormField{Name: dp["name"]}
		if filename, ok := dp["filename"]; ok {
			f.File, f.Chosen = true, filename != "" || len(content) > 0
			f.Value = CleanText(filename, 200)
		} else {
			if ct := p.Header.Get("Content-Type"); ct != "" {
				mt, cp, err := mime.ParseMediaType(ct)
				if err != nil || mt != "text/plain" || (cp["charset"] != "" && !strings.EqualFold(cp["charset"], "utf-8")) {
					return nil, errFormUnsupported
				}
			}
			if p.Header.Get("Content-Transfer-Encoding") != "" {
				return nil, errFormUnsupported
			}
			f.Value = string(content)
		}
		if fields, err = appendField(fields, f); err != nil {
			return nil, err
		}
	}
}

// appendField adds a field that a page can carry and a browser send
// again unchanged.
func appendField(fields []FormField, f FormField) ([]FormField, error) {
	if len(fields) >= maxFormFields || !sendable(f.Name) || f.Name == "" || !sendable(f.Value) {
		return nil, errFormUnsupported
	}
	return append(fields, f), nil
}

// sendable: valid UTF-8 without NUL (an HTML page turns NUL into U+FFFD).
// Line breaks come back as CRLF, as browsers always send them.
func sendable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}
