package dataset

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// touch writes a tiny valid PNG at root/rel (content does not matter to Discover).
func touch(t *testing.T, root, rel string) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := SavePNG(p, NewRGB(8, 8)); err != nil {
		t.Fatal(err)
	}
}

func ids(ims []Image) []string {
	var out []string
	for _, im := range ims {
		out = append(out, im.ID)
	}
	return out
}

func TestDiscoverLayouts(t *testing.T) {
	tests := []struct {
		name      string
		files     []string
		wantIDs   []string
		wantLR    map[string]bool // ID -> has LR
		wantTrain int
		wantValid int
		wantProbs []string // substrings of problem paths, in order
	}{
		{
			name: "div2k with lr and flickr nested",
			files: []string{"DIV2K_train_HR/0001.png", "DIV2K_train_HR/0002.png",
				"DIV2K_train_LR_bicubic/X4/0001x4.png", "DIV2K_train_LR_bicubic/X4/0002x4.png",
				"Flickr2K/Flickr2K_HR/000001.png", "DIV2K_valid_HR/0801.png"},
			wantIDs: []string{"DIV2K_train/0001", "DIV2K_train/0002", "DIV2K_valid/0801", "Flickr2K/000001"},
			wantLR: map[string]bool{"DIV2K_train/0001": true, "DIV2K_train/0002": true,
				"DIV2K_valid/0801": false, "Flickr2K/000001": false},
			wantTrain: 3, wantValid: 1,
		},
		{
			name: "flickr at root with lr, one pair missing, one orphan",
			files: []string{"Flickr2K_HR/000001.png", "Flickr2K_HR/000002.png",
				"Flickr2K_LR_bicubic/X4/000001x4.png", "Flickr2K_LR_bicubic/X4/000009x4.png"},
			wantIDs:   []string{"Flickr2K/000001", "Flickr2K/000002"},
			wantLR:    map[string]bool{"Flickr2K/000001": true, "Flickr2K/000002": false},
			wantTrain: 2,
			wantProbs: []string{"Flickr2K_HR/000002.png", "000009x4.png"},
		},
		{
			name:      "plain folder ignores sub-folders and non-images",
			files:     []string{"b.png", "a.png", "val/c.png", "notes.txt"},
			wantIDs:   []string{"a", "b"},
			wantLR:    map[string]bool{"a": false, "b": false},
			wantTrain: 2,
		},
		{
			name:      "plain duplicate stems",
			files:     []string{"a.png", "a.jpg"},
			wantIDs:   []string{"a"},
			wantTrain: 1,
			wantProbs: []string{"a.png"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				if strings.HasSuffix(f, ".txt") {
					os.WriteFile(filepath.Join(root, f), []byte("x"), 0o644)
					continue
				}
				touch(t, root, f)
			}
			l, err := Discover(root)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(l.Images); !reflect.DeepEqual(got, tc.wantIDs) {
				t.Fatalf("IDs = %v, want %v", got, tc.wantIDs)
			}
			for _, im := range l.Images {
				if want, ok := tc.wantLR[im.ID]; ok && (im.LRPath != "") != want {
					t.Errorf("%s LRPath = %q, want LR present %v", im.ID, im.LRPath, want)
				}
			}
			if len(l.Train()) != tc.wantTrain || len(l.Valid()) != tc.wantValid {
				t.Errorf("train/valid = %d/%d, want %d/%d", len(l.Train()), len(l.Valid()), tc.wantTrain, tc.wantValid)
			}
			if len(l.Problems) != len(tc.wantProbs) {
				t.Fatalf("problems = %v, want %d matching %v", l.Problems, len(tc.wantProbs), tc.wantProbs)
			}
			for i, p := range tc.wantProbs {
				if !strings.Contains(l.Problems[i].Path, p) {
					t.Errorf("problem %d = %v, want path containing %q", i, l.Problems[i], p)
				}
			}
		})
	}
}

func TestDiscoverErrors(t *testing.T) {
	if _, err := Discover(filepath.Join(t.TempDir(), "absent")); err == nil || !strings.Contains(err.Error(), "absent") {
		t.Errorf("missing root: err = %v, want one naming the folder", err)
	}
	if _, err := Discover(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no images") {
		t.Errorf("empty root: err = %v, want 'no images'", err)
	}
}

func TestPNGRoundTripAndCorrupt(t *testing.T) {
	img := NewRGB(5, 3)
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "x.png")
	if err := SavePNG(p, img); err != nil {
		t.Fatal(err)
	}
	got, err := LoadRGB(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.W != 5 || got.H != 3 || !bytes.Equal(got.Pix, img.Pix) {
		t.Fatalf("round trip differs: %dx%d %v", got.W, got.H, got.Pix)
	}
	if w, h, err := ImageSize(p); err != nil || w != 5 || h != 3 {
		t.Fatalf("ImageSize = %d,%d,%v", w, h, err)
	}
	data, _ := os.ReadFile(p)
	bad := filepath.Join(dir, "bad.png")
	os.WriteFile(bad, data[:len(data)/2], 0o644)
	if _, err := LoadRGB(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("truncated PNG: err = %v, want one naming %s", err, bad)
	}
	txt := filepath.Join(dir, "txt.png")
	os.WriteFile(txt, []byte("hello world"), 0o644)
	if _, err := LoadRGB(txt); err == nil || !strings.Contains(err.Error(), txt) {
		t.Errorf("non-image: err = %v, want one naming %s", err, txt)
	}
}

func TestCropMultiple(t *testing.T) {
	img := NewRGB(10, 7)
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	c := img.CropMultiple(4)
	if c.W != 8 || c.H != 4 {
		t.Fatalf("size %dx%d, want 8x4", c.W, c.H)
	}
	// pixel (7,3) of the crop is pixel (7,3) of the source.
	if c.Pix[(3*8+7)*3] != img.Pix[(3*10+7)*3] {
		t.Errorf("crop pixel differs")
	}
}
