package gate

import (
	"bytes"
	"errors"
	"mime/multipart"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestParseFormBody(t *testing.T) {
	mp := func(build func(w *multipart.Writer)) (string, string) {
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		build(w)
		_ = w.Close()
		return w.FormDataContentType(), buf.String()
	}
	ctGood, bodyGood := mp(func(w *multipart.Writer) {
		_ = w.WriteField("a", "1")
		f, _ := w.CreateFormFile("doc", `C:\fakepath\r"e"port.pdf`)
		_, _ = f.Write([]byte("\x00binary"))
		_ = w.WriteField("a", "two\r\nlines")
	})
	kept := []struct {
		name, ct, body string
		enctype        string
		fields         []FormField
	}{
		{"ordered, repeated", EnctypeURLEncoded, "b=2&a=1&b=3", EnctypeURLEncoded, []FormField{{Name: "b", Value: "2"}, {Name: "a", Value: "1"}, {Name: "b", Value: "3"}}},
		{"escapes and plus", EnctypeURLEncoded + "; charset=UTF-8", "q=a+b%2Bc%26d%3De&%C3%A9=%F0%9F%98%80", EnctypeURLEncoded,
			[]FormField{{Name: "q", Value: "a b+c&d=e"}, {Name: "é", Value: "😀"}}},
		{"empty parts and values", EnctypeURLEncoded, "&a=&&b&", EnctypeURLEncoded, []FormField{{Name: "a"}, {Name: "b"}}},
		{"empty body", EnctypeURLEncoded, "", EnctypeURLEncoded, nil},
		{"multipart with a file", ctGood, bodyGood, EnctypeMultipart, []FormField{{Name: "a", Value: "1"},
			{Name: "doc", Value: `C:\fakepath\r"e"port.pdf`, File: true, Chosen: true}, {Name: "a", Value: "two\r\nlines"}}},
	}
	for _, c := range kept {
		enctype, fields, err := ParseFormBody(c.ct, []byte(c.body))
		if err != nil || enctype != c.enctype || !reflect.DeepEqual(fields, c.fields) {
			t.Errorf("%s: %q %+v %v, want %q %+v", c.name, enctype, fields, err, c.enctype, c.fields)
		}
	}

	many := strings.Repeat("a=1&", maxFormFields+1)
	ctNoName, bodyNoName := mp(func(w *multipart.Writer) { _ = w.WriteField("", "x") })
	ctTrunc, bodyTrunc := mp(func(w *multipart.Writer) { _ = w.WriteField("a", "1") })
	bodyTrunc = bodyTrunc[:len(bodyTrunc)-8]
	ctNUL, bodyNUL := mp(func(w *multipart.Writer) { _ = w.WriteField("a", "x\x00y") })
	ctLatin, bodyLatin := mp(func(w *multipart.Writer) { _ = w.WriteField("a", "\xe9t\xe9") })
	partWith := func(header string) (string, string) {
		return "multipart/form-data; boundary=XX", "--XX\r\n" + header + "\r\n\r\nvalue\r\n--XX--\r\n"
	}
	hostile := map[string][2]string{
		"bad escape":               {EnctypeURLEncoded, "a=%zz"},
		"bad escape in a name":     {EnctypeURLEncoded, "%G0=1"},
		"NUL":                      {EnctypeURLEncoded, "a=%00"},
		"NUL in a name":            {EnctypeURLEncoded, "%00=a"},
		"no name":                  {EnctypeURLEncoded, "=x"},
		"semicolon":                {EnctypeURLEncoded, "a=1;b=2"},
		"not UTF-8":                {EnctypeURLEncoded, "a=%FF"},
		"overlong UTF-8":           {EnctypeURLEncoded, "a=%C0%AF"},
		"another charset":          {EnctypeURLEncoded + "; charset=windows-1252", "a=1"},
		"too many fields":          {EnctypeURLEncoded, many},
		"text/plain":               {"text/plain", "a=1"},
		"JSON":                     {"application/json", `{"a":1}`},
		"no content type":          {"", "a=1"},
		"multipart no boundary":    {EnctypeMultipart, bodyGood},
		"multipart wrong boundary": {"multipart/form-data; boundary=nope", bodyGood},
		"multipart no name":        {ctNoName, bodyNoName},
		"multipart truncated":      {ctTrunc, bodyTrunc},
		"multipart NUL":            {ctNUL, bodyNUL},
		"multipart not UTF-8":      {ctLatin, bodyLatin},
	}
	for name, h := range map[string]string{
		"multipart attachment":         `Content-Disposition: attachment; name="a"`,
		"multipart no disposition":     `X-Other: 1`,
		"multipart binary part":        "Content-Disposition: form-data; name=\"a\"\r\nContent-Type: application/octet-stream",
		"multipart Latin-1 part":       "Content-Disposition: form-data; name=\"a\"\r\nContent-Type: text/plain; charset=iso-8859-1",
		"multipart quoted-printable":   "Content-Disposition: form-data; name=\"a\"\r\nContent-Transfer-Encoding: quoted-printable",
		"multipart broken disposition": `Content-Disposition: form-data; name="a`,
	} {
		ct, body := partWith(h)
		hostile[name] = [2]string{ct, body}
	}
	for name, c := range hostile {
		if enctype, fields, err := ParseFormBody(c[0], []byte(c[1])); !errors.Is(err, errFormUnsupported) {
			t.Errorf("%s: %q %+v %v, want errFormUnsupported", name, enctype, fields, err)
		}
	}
	// A text part that says text/plain in UTF-8 is an ordinary field.
	ct, body := partWith("Content-Disposition: form-data; name=\"a\"\r\nContent-Type: text/plain; charset=utf-8")
	if _, fields, err := ParseFormBody(ct, []byte(body)); err != nil || len(fields) != 1 || fields[0].Value != "value" {
		t.Errorf("a text/plain part: %+v %v", fields, err)
	}
}

// FuzzParseFormBody: no body panics the parser; whatever it accepts is
// fields a page can carry (named, UTF-8, no NUL), and an accepted
// urlencoded body, sent again as a browser sends those fields, reads
// back the same.
func FuzzParseFormBody(f *testing.F) {
	f.Add(EnctypeURLEncoded, []byte("a=1&b=%C3%A9&c=x+y&a=2"))
	f.Add(EnctypeURLEncoded, []byte("=&&%zz;"))
	f.Add("multipart/form-data; boundary=XX", []byte("--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX\r\n"+
		"Content-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\nContent-Type: text/plain\r\n\r\nfile\r\n--XX--\r\n"))
	f.Add("multipart/form-data; boundary=XX", []byte("--XX\r\nContent-Disposition: form-data\r\n\r\n--XX"))
	f.Add("text/plain", []byte("a=1"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		enctype, fields, err := ParseFormBody(ct, body)
		if err != nil {
			if !errors.Is(err, errFormUnsupported) || enctype != "" || fields != nil {
				t.Fatalf("a refusal: %q %v %v", enctype, fields, err)
			}
			return
		}
		if len(fields) > maxFormFields {
			t.Fatalf("%d fields", len(fields))
		}
		for _, fl := range fields {
			if fl.Name == "" || !sendable(fl.Name) || !sendable(fl.Value) || (!fl.File && fl.Chosen) {
				t.Fatalf("an unsendable field: %+v", fl)
			}
		}
		if enctype != EnctypeURLEncoded {
			return
		}
		var parts []string
		for _, fl := range fields {
			parts = append(parts, url.QueryEscape(fl.Name)+"="+url.QueryEscape(fl.Value))
		}
		_, again, err := ParseFormBody(EnctypeURLEncoded, []byte(strings.Join(parts, "&")))
		if err != nil || !reflect.DeepEqual(again, fields) {
			t.Fatalf("sent again: %+v %v, want %+v", again, err, fields)
		}
	})
}
