package admin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/allot-go/allot/httpadapter/admin"
)

// redoclyVersion is the version of @redocly/cli that lints openapi.json;
// .ci/run installs it.
const redoclyVersion = "2.77.0"

type openAPIDoc struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
	Comps   struct {
		Schemas map[string]json.RawMessage `json:"schemas"`
	} `json:"components"`
}

func servedDoc(t *testing.T) openAPIDoc {
	t.Helper()
	h := admin.Handler(newEngine(t), allowAll)
	r := do(t, h, "GET", "/openapi.json", "")
	if r.Code != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET openapi.json: %d %s", r.Code, r.Header.Get("Content-Type"))
	}
	file, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if r.Body != string(file) {
		t.Fatal("the document served is not openapi.json")
	}
	var doc openAPIDoc
	if err := json.Unmarshal(file, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestOpenAPIMatchesRoutes: every route of the handler's table has its
// path and method in openapi.json, with its operationId, and the document
// describes no operation the table lacks.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := servedDoc(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Fatalf("openapi %q, want 3.1.x", doc.OpenAPI)
	}
	inDoc := map[string]string{} // "METHOD path" -> operationId
	for path, item := range doc.Paths {
		for method, raw := range item {
			switch method {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
			default:
				continue // parameters, summary, ...
			}
			var op struct {
				OperationID string `json:"operationId"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatal(err)
			}
			inDoc[strings.ToUpper(method)+" "+path] = op.OperationID
		}
	}
	inTable := map[string]string{}
	for _, rt := range admin.Routes() {
		k := rt.Method + " " + rt.Path
		if _, dup := inTable[k]; dup {
			t.Errorf("route %s twice in the table", k)
		}
		inTable[k] = rt.Op
	}
	for k, op := range inTable {
		switch docOp, ok := inDoc[k]; {
		case !ok:
			t.Errorf("route %s (%s) is not in openapi.json", k, op)
		case docOp != op:
			t.Errorf("route %s: operationId %q in openapi.json, %q in the table", k, docOp, op)
		}
	}
	for k, op := range inDoc {
		if _, ok := inTable[k]; !ok {
			t.Errorf("openapi.json describes %s (%s), which the handler does not serve", k, op)
		}
	}
	if len(inTable) == 0 || t.Failed() {
		return
	}
	// And the handler serves each of them: no route falls through to the
	// 404 or 405 answers (an authorised request with an empty body gets
	// something else: an answer, or a 400 of its own).
	h := admin.Handler(newEngine(t), allowAll)
	for _, rt := range admin.Routes() {
		r := do(t, h, rt.Method, strings.ReplaceAll(rt.Path, "{id}", idOf("k")), "")
		if strings.Contains(r.Body, `"code":"not_found"`) || r.Code == http.StatusMethodNotAllowed {
			t.Errorf("%s %s is not served: %d %s", rt.Method, rt.Path, r.Code, r.Body)
		}
	}
}

// TestOpenAPIProblemCodes: the Problem schema's code enum is the set of
// codes the handler answers.
func TestOpenAPIProblemCodes(t *testing.T) {
	doc := servedDoc(t)
	var problem struct {
		Properties struct {
			Code struct {
				Enum []string `json:"enum"`
			} `json:"code"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(doc.Comps.Schemas["Problem"], &problem); err != nil {
		t.Fatal(err)
	}
	got, want := slices.Sorted(slices.Values(problem.Properties.Code.Enum)), slices.Sorted(slices.Values(admin.Codes()))
	if !slices.Equal(got, want) {
		t.Fatalf("openapi.json's problem codes %v, the handler's %v", got, want)
	}
}

// TestOpenAPILint lints openapi.json with Redocly's CLI (pinned at
// redoclyVersion), a validator no one here wrote: `redocly lint
// --extends=minimal`. It must pass with no error and with no warning but
// security-defined: the handler's security is whatever the server's
// WithAuthorize checks, which the document cannot name. Without redocly
// on PATH the test fails under CI=true and is skipped elsewhere.
func TestOpenAPILint(t *testing.T) {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	bin, err := exec.LookPath("redocly")
	if err != nil {
		msg := "redocly not found on PATH; install it with: npm install -g @redocly/cli@" + redoclyVersion
		if ci {
			t.Fatal(msg + " (.ci/run does, before make test)")
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	env := append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1")
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Env = env
	v, err := cmd.Output()
	if err != nil {
		t.Fatalf("redocly --version: %v", err)
	}
	if got := strings.TrimSpace(string(v)); got != redoclyVersion {
		if ci {
			t.Fatalf("redocly %s, want %s", got, redoclyVersion)
		}
		t.Logf("redocly %s, not the pinned %s", got, redoclyVersion)
	}

	cmd = exec.CommandContext(ctx, bin, "lint", "--extends=minimal", "--format=json", "openapi.json")
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("redocly lint: %v\n%s\n%s", err, out, stderr.String())
	}
	var report struct {
		Totals struct {
			Errors, Warnings, Ignored int
		} `json:"totals"`
		Version  string `json:"version"`
		Problems []struct {
			RuleID   string `json:"ruleId"`
			Severity string `json:"severity"`
			Message  string `json:"message"`
			Location []struct {
				Pointer string `json:"pointer"`
			} `json:"location"`
		} `json:"problems"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("redocly lint's report: %v\n%s", err, out)
	}
	byRule := map[string]int{}
	for _, p := range report.Problems {
		byRule[p.RuleID]++
		if p.RuleID != "security-defined" || p.Severity != "warn" {
			where := ""
			if len(p.Location) > 0 {
				where = p.Location[0].Pointer
			}
			t.Errorf("%s %s at %s: %s", p.Severity, p.RuleID, where, p.Message)
		}
	}
	if report.Totals.Errors != 0 {
		t.Errorf("%d errors", report.Totals.Errors)
	}
	t.Logf("redocly %s lint --extends=minimal: %d errors, %d warnings (by rule: %v)", report.Version, report.Totals.Errors, report.Totals.Warnings, byRule)
}
