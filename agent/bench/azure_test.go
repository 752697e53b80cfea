package bench_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-agent/edge-agent/agent/bench"
)

// A generated per-minute file read back is the same functions; imported,
// every invocation of the functions taken becomes one request inside its
// minute, on one model per function; seeds change the file and the
// mapping, and the same seed repeats them.
func TestAzureRoundTrip(t *testing.T) {
	gen := func(seed int64) []bench.AzureFunction {
		return bench.GenerateAzure(bench.AzureOptions{Functions: 12, Minutes: 120, Seed: seed, Zipf: 1.1})
	}
	fns := gen(3)
	if !slices.EqualFunc(fns, gen(3), azureEqual) || slices.EqualFunc(fns, gen(4), azureEqual) {
		t.Fatal("the same seed must repeat the file and another must change it")
	}
	var buf bytes.Buffer
	if err := bench.WriteAzure(&buf, fns); err != nil {
		t.Fatal(err)
	}
	if head, _, _ := strings.Cut(buf.String(), "\n"); !strings.HasPrefix(head, "HashOwner,HashApp,HashFunction,Trigger,1,2,3,") || !strings.HasSuffix(head, ",120") {
		t.Fatalf("header %.80q…", head)
	}
	back, err := bench.ReadAzure(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(fns, back, azureEqual) {
		t.Fatal("read back differs from what was written")
	}
	models := []string{"a", "b", "c", "d", "e"}
	total := 0
	// The five most invoked functions, one per model.
	byUse := slices.Clone(fns)
	slices.SortStableFunc(byUse, func(a, b bench.AzureFunction) int { return b.Total() - a.Total() })
	want := map[int]int{} // minute → requests
	for _, f := range byUse[:5] {
		total += f.Total()
		for m, c := range f.PerMinute {
			want[m] += c
		}
	}
	tr, err := bench.ImportAzure(back, bench.ImportOptions{Models: models, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr) != total || total == 0 {
		t.Fatalf("%d requests, want the %d invocations of the 5 most invoked functions", len(tr), total)
	}
	got := map[int]int{}
	used := map[string]bool{}
	for _, r := range tr {
		got[int(r.At/time.Minute)]++
		used[r.Model] = true
	}
	for m, c := range want {
		if got[m] != c {
			t.Fatalf("minute %d: %d requests, want %d", m+1, got[m], c)
		}
	}
	if len(used) != 5 {
		t.Fatalf("requests on %d models, want all 5", len(used))
	}
	if !slices.IsSortedFunc(tr, func(a, b bench.TraceRequest) int { return int(a.At - b.At) }) {
		t.Fatal("not in time order")
	}
	again, _ := bench.ImportAzure(back, bench.ImportOptions{Models: models, Seed: 1})
	other, _ := bench.ImportAzure(back, bench.ImportOptions{Models: models, Seed: 2})
	if !slices.Equal(tr, again) || slices.Equal(tr, other) {
		t.Fatal("the same seed must repeat the import and another must change it")
	}
	// More functions than models: they share the models in turn.
	all, err := bench.ImportAzure(back, bench.ImportOptions{Models: models[:2], Functions: 100, Seed: 1})
	n := 0
	for _, f := range fns {
		n += f.Total()
	}
	if err != nil || len(all) != n {
		t.Fatalf("all functions on 2 models: %d requests (%v), want %d", len(all), err, n)
	}
}

func azureEqual(a, b bench.AzureFunction) bool {
	return a.Owner == b.Owner && a.App == b.App && a.Function == b.Function && a.Trigger == b.Trigger && slices.Equal(a.PerMinute, b.PerMinute)
}

// A file not in the format is refused with the reason and the line.
func TestReadAzureErrors(t *testing.T) {
	const head = "HashOwner,HashApp,HashFunction,Trigger,1,2,3\n"
	for _, c := range []struct{ name, in, want string }{
		{"empty", "", "empty file"},
		{"header only", head, "no functions"},
		{"no minutes", "HashOwner,HashApp,HashFunction,Trigger\n", "header has 4 columns"},
		{"a request trace", "t_ms,model_id\n0,a\n", "header has 2 columns"},
		{"renamed key", "HashOwner,HashApp,Function,Trigger,1\nx,y,z,http,1\n", `column 3 is "Function"`},
		{"minutes out of order", "HashOwner,HashApp,HashFunction,Trigger,1,3\n", `column 6 is "3", want minute 2`},
		{"negative count", head + "o,a,f,http,1,-2,0\n", "line 2, minute 2: count \"-2\""},
		{"not a number", head + "o,a,f,http,1,2,x\n", "line 2, minute 3"},
		{"short row", head + "o,a,f,http,1,2\n", "wrong number of fields"},
		{"no function", head + "o,a,,http,1,2,3\n", "no HashFunction"},
	} {
		_, err := bench.ReadAzure(strings.NewReader(c.in))
		if !errors.Is(err, bench.ErrAzureFormat) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrAzureFormat mentioning %q", c.name, err, c.want)
		}
	}
	fns, err := bench.ReadAzure(strings.NewReader(head + "o,a,f,http,0,0,0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bench.ImportAzure(fns, bench.ImportOptions{Models: []string{"m"}}); err == nil || !strings.Contains(err.Error(), "never invoked") {
		t.Errorf("import of a function never invoked: %v", err)
	}
}

// `trace azure` writes a per-minute file and `trace import` turns it into
// the request trace `replay` reads, over a folder's models.
func TestTraceAzureCommands(t *testing.T) {
	dir, costs := guardCosts(t)
	az := filepath.Join(t.TempDir(), "az.csv")
	if code, _, e := benchMain(t, "trace", "azure", "--functions", "20", "--minutes", "60", "--seed", "7", "--zipf", "0.9", "--out", az); code != 0 {
		t.Fatalf("trace azure: %d %s", code, e)
	}
	out := filepath.Join(t.TempDir(), "trace.csv")
	if code, _, e := benchMain(t, "trace", "import", "--azure", az, "--models", dir, "--seed", "7", "--out", out); code != 0 {
		t.Fatalf("trace import: %d %s", code, e)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr, err := bench.ReadTrace(f)
	if err != nil || len(tr) < 100 {
		t.Fatalf("imported trace: %d requests, %v", len(tr), err)
	}
	for _, r := range tr {
		if _, ok := costs[r.Model]; !ok || r.At >= time.Hour {
			t.Fatalf("request %+v: not a zoo model, or past the file's hour", r)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(bad, []byte("t_ms,model_id\n0,a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, e := benchMain(t, "trace", "import", "--azure", bad, "--models", dir); code != 1 || !strings.Contains(e, "not an Azure Functions") {
		t.Errorf("import of a request trace: exit %d %q", code, e)
	}
	if code, _, _ := benchMain(t, "trace", "azure", "--zipf", "0"); code != 2 {
		t.Errorf("trace azure --zipf 0: exit %d, want 2", code)
	}
}
