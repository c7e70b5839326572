// Package dataset finds training and validation images (DIV2K, Flickr2K or a plain
// folder), makes LR images with a MATLAB-compatible bicubic imresize, cuts images
// into tiles and patches, samples patches deterministically for data-parallel
// training, attaches structural masks (E) from maskgen, packs decoded tiles into a
// checksummed cache and generates synthetic images (METHOD §1, reference notes §5).
package dataset

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Set names used in Image.Set and SetInfo.Name.
const (
	SetDIV2KTrain = "DIV2K_train"
	SetFlickr2K   = "Flickr2K"
	SetDIV2KValid = "DIV2K_valid"
	SetPlain      = "plain"
)

// Image is one HR image found by Discover, with its LR x4 counterpart when one exists.
type Image struct {
	// ID is unique within a Layout: "<Set>/<stem>" for DIV2K/Flickr2K ("DIV2K_train/0001"),
	// the file stem for plain folders ("0001"). Mask files are named after it.
	ID string
	// Set is SetDIV2KTrain, SetFlickr2K, SetDIV2KValid or SetPlain.
	Set string
	// HRPath is the HR image file.
	HRPath string
	// LRPath is the official x4 LR image, or "" when the LR is to be generated.
	LRPath string
}

// SetInfo summarises one set found under the root.
type SetInfo struct {
	// Name is the set name (SetDIV2KTrain, ...).
	Name string
	// HRDir is the folder holding the HR images.
	HRDir string
	// LRDir is the x4 LR folder, or "" when there is none (LR generated).
	LRDir string
	// Images is the number of HR images; WithLR how many of them have an LR file.
	Images, WithLR int
	// Valid reports whether the set is a validation set.
	Valid bool
}

// Problem is one thing wrong with a file of the dataset.
type Problem struct {
	// Path is the file (or folder) concerned.
	Path string
	// Msg says what is wrong and, where possible, how to fix it.
	Msg string
}

// String renders the problem as "path: message".
func (p Problem) String() string { return p.Path + ": " + p.Msg }

// Layout is what Discover found under a root folder.
type Layout struct {
	// Root is the folder that was searched.
	Root string
	// Sets lists the sets found, in a fixed order (DIV2K train, Flickr2K, DIV2K valid, plain).
	Sets []SetInfo
	// Images holds every HR image, sorted by ID (deterministic).
	Images []Image
	// Problems lists files that look wrong (missing pairs, duplicates, unreadable folders).
	Problems []Problem
}

// Train returns the training images: every image not in a validation set.
func (l *Layout) Train() []Image {
	var out []Image
	for _, im := range l.Images {
		if im.Set != SetDIV2KValid {
			out = append(out, im)
		}
	}
	return out
}

// Valid returns the validation images (DIV2K valid). A separate validation folder
// (data.val_root) is discovered on its own: all its images are validation images.
func (l *Layout) Valid() []Image {
	var out []Image
	for _, im := range l.Images {
		if im.Set == SetDIV2KValid {
			out = append(out, im)
		}
	}
	return out
}

// imageExts are the file extensions Discover accepts as images.
var imageExts = map[string]bool{".png": true, ".jpg": true, ".jpeg": true}

func isImageFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	return imageExts[strings.ToLower(filepath.Ext(name))]
}

// setSpec describes where one standard set lives relative to the root.
type setSpec struct {
	name  string
	hr    []string // candidate HR folders, first existing wins
	lr    []string // candidate LR x4 folders, matched by position with hr
	valid bool
}

var standardSets = []setSpec{
	{name: SetDIV2KTrain, hr: []string{"DIV2K_train_HR"}, lr: []string{"DIV2K_train_LR_bicubic/X4"}},
	{name: SetFlickr2K, hr: []string{"Flickr2K/Flickr2K_HR", "Flickr2K_HR"},
		lr: []string{"Flickr2K/Flickr2K_LR_bicubic/X4", "Flickr2K_LR_bicubic/X4"}},
	{name: SetDIV2KValid, hr: []string{"DIV2K_valid_HR"}, lr: []string{"DIV2K_valid_LR_bicubic/X4"}, valid: true},
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// Discover finds the images under root. It recognises the standard layouts
// (DIV2K_train_HR with optional DIV2K_train_LR_bicubic/X4, Flickr2K/Flickr2K_HR or
// Flickr2K_HR with optional Flickr2K_LR_bicubic/X4, DIV2K_valid_HR with optional
// DIV2K_valid_LR_bicubic/X4); when none is present, root is taken as a plain folder of
// HR images (png, jpg), sub-folders ignored except LR_bicubic/X4 for the LR pairs. It only lists files: decoding problems are
// found by Check. An error is returned when root cannot be read or holds no image.
func Discover(root string) (*Layout, error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("dataset: data root %s: %w (give an existing folder of PNG/JPEG images or a DIV2K/Flickr2K layout; a config with data.synthetic.n > 0 makes one: samdiffsr data synth --config FILE)", root, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("dataset: data root %s is not a folder (give a folder of PNG/JPEG images or a DIV2K/Flickr2K layout)", root)
	}
	l := &Layout{Root: root}
	for _, s := range standardSets {
		for i, hr := range s.hr {
			hrDir := filepath.Join(root, filepath.FromSlash(hr))
			if !isDir(hrDir) {
				continue
			}
			lrDir := filepath.Join(root, filepath.FromSlash(s.lr[i]))
			if !isDir(lrDir) {
				lrDir = ""
			}
			l.addSet(s.name, s.valid, hrDir, lrDir, s.name+"/")
			break
		}
	}
	if len(l.Sets) == 0 {
		lrDir := filepath.Join(root, "LR_bicubic", "X4")
		if !isDir(lrDir) {
			lrDir = ""
		}
		l.addSet(SetPlain, false, root, lrDir, "")
	}
	sort.Slice(l.Images, func(i, j int) bool { return l.Images[i].ID < l.Images[j].ID })
	if len(l.Images) == 0 {
		return l, fmt.Errorf("dataset: no images (png, jpg) found under %s; expected DIV2K_train_HR/, Flickr2K/Flickr2K_HR/, DIV2K_valid_HR/ or a plain folder of HR images", root)
	}
	return l, nil
}

// addSet lists hrDir (and lrDir) and appends the set's images and problems.
func (l *Layout) addSet(name string, valid bool, hrDir, lrDir, idPrefix string) {
	info := SetInfo{Name: name, HRDir: hrDir, LRDir: lrDir, Valid: valid}
	hrFiles, err := listImages(hrDir)
	if err != nil {
		l.Problems = append(l.Problems, Problem{Path: hrDir, Msg: fmt.Sprintf("cannot list folder: %v", err)})
		return
	}
	lrFiles := map[string]string{} // stem (without x4) -> file name
	if lrDir != "" {
		names, err := listImages(lrDir)
		if err != nil {
			l.Problems = append(l.Problems, Problem{Path: lrDir, Msg: fmt.Sprintf("cannot list folder: %v; LR will be generated", err)})
			lrDir = ""
			info.LRDir = ""
		}
		for _, n := range names {
			stem := strings.TrimSuffix(n, filepath.Ext(n))
			if !strings.HasSuffix(stem, "x4") {
				l.Problems = append(l.Problems, Problem{Path: filepath.Join(lrDir, n),
					Msg: "LR file name does not end in x4 (expected <stem>x4.png); ignored"})
				continue
			}
			lrFiles[strings.TrimSuffix(stem, "x4")] = n
		}
	}
	seen := map[string]string{}
	for _, n := range hrFiles {
		stem := strings.TrimSuffix(n, filepath.Ext(n))
		if prev, dup := seen[stem]; dup {
			l.Problems = append(l.Problems, Problem{Path: filepath.Join(hrDir, n),
				Msg: fmt.Sprintf("same image name as %s; ignored (remove one of them)", prev)})
			continue
		}
		seen[stem] = n
		im := Image{ID: idPrefix + stem, Set: name, HRPath: filepath.Join(hrDir, n)}
		if lrDir != "" {
			if lr, ok := lrFiles[stem]; ok {
				im.LRPath = filepath.Join(lrDir, lr)
				info.WithLR++
				delete(lrFiles, stem)
			} else {
				l.Problems = append(l.Problems, Problem{Path: im.HRPath,
					Msg: fmt.Sprintf("missing LR pair %s; it will be generated with the MATLAB-compatible bicubic", filepath.Join(lrDir, stem+"x4.png"))})
			}
		}
		l.Images = append(l.Images, im)
		info.Images++
	}
	orphans := make([]string, 0, len(lrFiles))
	for _, n := range lrFiles {
		orphans = append(orphans, n)
	}
	sort.Strings(orphans)
	for _, n := range orphans {
		l.Problems = append(l.Problems, Problem{Path: filepath.Join(lrDir, n),
			Msg: fmt.Sprintf("LR image has no HR pair in %s; ignored", hrDir)})
	}
	l.Sets = append(l.Sets, info)
}

// listImages returns the sorted names of image files directly in dir.
func listImages(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil && len(ents) == 0 {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.Type()&fs.ModeType != 0 && !e.Type().IsRegular() && e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		if e.IsDir() {
			continue
		}
		if isImageFile(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}
