package policies

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

// TestSchemaFileIsTheSchema: docs/input.schema.json, which the docs give
// security teams (and test.sh gives `opa check --schema`), is the schema
// Gatehouse type-checks policies with.
func TestSchemaFileIsTheSchema(t *testing.T) {
	b, err := os.ReadFile("../docs/input.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var file any
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatalf("docs/input.schema.json: %v", err)
	}
	if !reflect.DeepEqual(file, inputSchema()) {
		t.Error("docs/input.schema.json differs from the schema in policies/schema.go")
	}
}
