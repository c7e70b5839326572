package checkpoints

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The checkpoint folders of a run: listing them by step, the newest complete one,
// and pruning the oldest.

// Entry is one checkpoint folder found by List.
type Entry struct {
	Dir  string
	Step int64
	// Err is nil for a complete checkpoint, else why it is not usable.
	Err error
}

// checkpointRoot returns the folder holding step_* folders for a run directory or for
// the checkpoints folder itself.
func checkpointRoot(dir string) string {
	sub := filepath.Join(dir, SubDir)
	if st, err := os.Stat(sub); err == nil && st.IsDir() {
		return sub
	}
	return dir
}

// List returns every step_* folder of dir (a run directory or its checkpoints folder),
// ordered by step, each verified.
func List(dir string) ([]Entry, error) {
	root := checkpointRoot(dir)
	des, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: list %s: %w", root, err)
	}
	var out []Entry
	for _, de := range des {
		name := de.Name()
		if !de.IsDir() || !strings.HasPrefix(name, DirPrefix) {
			continue
		}
		step, err := strconv.ParseInt(strings.TrimPrefix(name, DirPrefix), 10, 64)
		if err != nil {
			continue
		}
		e := Entry{Dir: filepath.Join(root, name), Step: step}
		_, e.Err = Verify(e.Dir)
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Step < out[j].Step })
	return out, nil
}

// Latest returns the folder of the complete checkpoint with the highest step under dir
// (a run directory or its checkpoints folder), skipping incomplete and damaged ones.
// With none, the error wraps ErrNoCheckpoint and names the folder and what was skipped.
func Latest(dir string) (string, error) {
	latest, _, err := LatestSkipped(dir)
	return latest, err
}

// LatestSkipped is Latest that also returns the newer step folders it passed over
// because they are incomplete or damaged (newest first, each with its Err), so that a
// caller can say it is falling back to an older checkpoint.
func LatestSkipped(dir string) (string, []Entry, error) {
	es, err := List(dir)
	if err != nil {
		return "", nil, err
	}
	var skipped []Entry
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].Err == nil {
			return es[i].Dir, skipped, nil
		}
		skipped = append(skipped, es[i])
	}
	msg := fmt.Sprintf("checkpoints: %s: %v", checkpointRoot(dir), ErrNoCheckpoint)
	if len(skipped) > 0 {
		why := make([]string, len(skipped))
		for i, e := range skipped {
			why[i] = e.Err.Error()
		}
		msg += " (skipped: " + strings.Join(why, "; ") + ")"
	}
	return "", skipped, fmt.Errorf("%s: %w", msg, ErrNoCheckpoint)
}

// Prune removes the oldest complete checkpoints under dir so that at most keep remain
// (keep <= 0 keeps all), and removes leftover temporary folders of interrupted saves.
// Incomplete or damaged folders are left for a person to inspect.
func Prune(dir string, keep int) error {
	root := checkpointRoot(dir)
	des, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("checkpoints: prune %s: %w", root, err)
	}
	for _, de := range des {
		if de.IsDir() && strings.HasPrefix(de.Name(), "."+DirPrefix) && strings.Contains(de.Name(), ".tmp-") {
			os.RemoveAll(filepath.Join(root, de.Name()))
		}
	}
	if keep <= 0 {
		return nil
	}
	es, err := List(dir)
	if err != nil {
		return err
	}
	var complete []Entry
	for _, e := range es {
		if e.Err == nil {
			complete = append(complete, e)
		}
	}
	for i := 0; i < len(complete)-keep; i++ {
		if err := os.RemoveAll(complete[i].Dir); err != nil {
			return fmt.Errorf("checkpoints: remove %s: %w", complete[i].Dir, err)
		}
	}
	return nil
}
