package torchfile

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The files in testdata were written by testdata/make_testdata.py with Debian's
// python3-torch 1.13 (torch.save, legacy and zip formats).

func TestLoadTorchSaveFiles(t *testing.T) {
	js, err := os.ReadFile("testdata/tiny.json")
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]struct {
		Shape  []int     `json:"shape"`
		Values []float64 `json:"values"`
	}
	if err := json.Unmarshal(js, &want); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ file, format string }{{"tiny_legacy.pt", FormatLegacy}, {"tiny_zip.pt", FormatZip}} {
		t.Run(c.file, func(t *testing.T) {
			f, err := Load(filepath.Join("testdata", c.file), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if f.Format != c.format {
				t.Errorf("format %q, want %q", f.Format, c.format)
			}
			root := f.Root.(*Dict)
			if gs, _ := root.Get("global_step"); gs != 7 {
				t.Errorf("global_step %v", gs)
			}
			if n, _ := root.Get("note"); n != "tiny" {
				t.Errorf("note %v", n)
			}
			if lr, _ := root.Get("lr"); len(lr.([]any)) != 2 || lr.([]any)[1].([]any)[1] != 0.999 {
				t.Errorf("lr %v", lr)
			}
			sdv, _ := root.Get("state_dict")
			mv, _ := sdv.(*Dict).Get("model")
			model := mv.(*Dict)
			var order []string
			for i, k := range model.Keys {
				name := k.(string)
				order = append(order, name)
				tt := model.Values[i].(*Tensor)
				w := want[name]
				if len(tt.Shape) != len(w.Shape) || tt.Numel() != len(w.Values) || len(tt.Data) != len(w.Values) {
					t.Errorf("%s: shape %v, want %v", name, tt.Shape, w.Shape)
					continue
				}
				for j, v := range w.Values {
					if tt.Data[j] != float32(v) && !(math.IsNaN(v) && math.IsNaN(float64(tt.Data[j]))) {
						t.Errorf("%s[%d] = %v, want %v (%s)", name, j, tt.Data[j], float32(v), tt.DType)
						break
					}
				}
			}
			if strings.Join(order, ",") != "w,t,row,h,bf,d,n,s" {
				t.Errorf("order %v: an OrderedDict must keep its order", order)
			}
		})
	}
}

// TestRefusesForeignCallables: a torch.save of an object whose unpickling would call
// os.system is refused, naming the callable, and nothing runs.
func TestRefusesForeignCallables(t *testing.T) {
	for _, file := range []string{"evil_legacy.pt", "evil_zip.pt"} {
		_, err := Load(filepath.Join("testdata", file), Options{})
		var re *RefusedError
		if !errors.As(err, &re) || re.Global != "posix.system" || !strings.Contains(err.Error(), file) {
			t.Errorf("%s: err %v, want a RefusedError for posix.system naming the file", file, err)
		}
	}
	// Hand-written protocol-2 pickles: builtins.eval through GLOBAL + REDUCE, and
	// STACK_GLOBAL (protocol 4) naming subprocess.Popen.
	dir := t.TempDir()
	for name, body := range map[string]string{
		"global": "\x80\x02c__builtin__\neval\nq\x00X\x05\x00\x00\x001+1+1q\x01\x85q\x02Rq\x03.",
		"stack":  "\x80\x04\x8c\x0asubprocess\x8c\x05Popen\x93\x8c\x02id\x85R.",
	} {
		p := filepath.Join(dir, name+".pt")
		if err := os.WriteFile(p, legacyFile(body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p, Options{})
		var re *RefusedError
		if !errors.As(err, &re) {
			t.Errorf("%s: err %v, want a RefusedError", name, err)
		}
	}
}

// legacyFile wraps an object pickle in the legacy torch.save framing.
func legacyFile(obj string) []byte {
	magic := "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19." // 0x1950a86a20f9469cfc6c
	proto := "\x80\x02M\xe9\x03."                                        // 1001
	sys := "\x80\x02}q\x00."
	keys := "\x80\x02]q\x00."
	return []byte(magic + proto + sys + obj + keys)
}

// TestHostileLengths: lengths declared inside the pickle or the framing that exceed
// the file are errors before any allocation, and damaged files never panic.
func TestHostileLengths(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"binbytes8":  "\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f.",
		"binunicode": "\x80\x02X\xff\xff\xff\x7f.",
		"frame":      "\x80\x04\x95\xff\xff\xff\xff\xff\xff\x00\x00.",
		"no stop":    "\x80\x02}q\x00",
		"bad opcode": "\x80\x02\xff.",
	} {
		p := filepath.Join(dir, "f.pt")
		os.WriteFile(p, legacyFile(body), 0o644)
		if _, err := Load(p, Options{}); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	for _, file := range []string{"tiny_legacy.pt", "tiny_zip.pt"} {
		good, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "d.pt")
		for _, n := range []int{len(good) - 1, len(good) - 40, len(good) / 2, 300, 30} {
			os.WriteFile(p, good[:n], 0o644)
			if _, err := Load(p, Options{}); err == nil {
				t.Errorf("%s truncated to %d bytes: loaded", file, n)
			}
		}
		rng := rand.New(rand.NewPCG(1, 1))
		for k := 0; k < 300; k++ {
			bad := append([]byte(nil), good...)
			for j := 0; j < 1+rng.IntN(3); j++ {
				bad[rng.IntN(len(bad))] = byte(rng.IntN(256))
			}
			os.WriteFile(p, bad, 0o644)
			Load(p, Options{}) // must return, error or not, without panicking
		}
	}
	// A storage bigger than the limit.
	if _, err := Load("testdata/tiny_zip.pt", Options{MaxBytes: 16}); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("MaxBytes 16: err %v", err)
	}
}

func TestHalfToFloat32(t *testing.T) {
	for h, want := range map[uint16]float32{
		0x3c00: 1, 0xc000: -2, 0x7bff: 65504, 0x0001: float32(math.Ldexp(1, -24)), 0x0200: float32(math.Ldexp(1, -15)),
		0x8000: float32(math.Copysign(0, -1)), 0x3555: 0.333251953125,
	} {
		if got := halfToFloat32(h); got != want || math.Signbit(float64(got)) != math.Signbit(float64(want)) {
			t.Errorf("half %#04x = %v, want %v", h, got, want)
		}
	}
	if !math.IsInf(float64(halfToFloat32(0x7c00)), 1) || !math.IsNaN(float64(halfToFloat32(0x7e00))) {
		t.Error("inf/nan")
	}
}
