package coordinator

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// EncodeState serialises a state for a raft snapshot. Maps encode with sorted keys,
// so equal states encode to equal bytes.
func EncodeState(s *State) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("coordinator: encode state: %w", err)
	}
	return b, nil
}

// DecodeState parses a snapshot written by EncodeState.
func DecodeState(data []byte) (*State, error) {
	s := NewState()
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("coordinator: decode snapshot: %w", err)
	}
	s.rebuild()
	return s, nil
}

// FSM adapts State to raft.FSM. Readers take a consistent view with View.
type FSM struct {
	mu sync.RWMutex
	st *State
	// onApply, when set, is called after each applied command (metrics, wake-ups).
	onApply func(cmd Command, res Result)
}

// NewFSM returns an FSM over an empty state.
func NewFSM() *FSM { return &FSM{st: NewState()} }

// View calls f with the current state under a read lock; f must not keep or change it.
func (f *FSM) View(fn func(s *State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.st)
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		return rejected("%v", err)
	}
	f.mu.Lock()
	res := f.st.Apply(l.Index, cmd)
	f.mu.Unlock()
	if f.onApply != nil {
		f.onApply(cmd, res)
	}
	return res
}

// Snapshot implements raft.FSM: it encodes the state under the read lock.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	data, err := EncodeState(f.st)
	f.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{data: data}, nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("coordinator: read snapshot: %w", err)
	}
	s, err := DecodeState(data)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st = s
	f.mu.Unlock()
	return nil
}

type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		sink.Cancel()
		return fmt.Errorf("coordinator: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
