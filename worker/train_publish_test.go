package worker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestPublisherInOrderWithRetries: enqueue never waits for an upload, uploads run
// in order, a failing one is retried until it succeeds, and one that keeps failing
// is given up on after publishAttempts without stopping the ones after it.
func TestPublisherInOrderWithRetries(t *testing.T) {
	var (
		mu    sync.Mutex
		calls []string
		fails = map[string]int{"b": 2, "c": publishAttempts + 3}
	)
	release := make(chan struct{})
	pub := func(ctx context.Context, dir string) error {
		name := filepath.Base(dir)
		if name == "a" {
			<-release // a slow upload
		}
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, name)
		if fails[name] > 0 {
			fails[name]--
			return errors.New("network down")
		}
		return nil
	}
	p := newPublisher(pub, 0, discardLog(), nil)
	p.backoff = time.Millisecond // before any enqueue: the goroutine reads it only then
	defer p.close()
	root := t.TempDir()
	t0 := time.Now()
	for _, n := range []string{"a", "b", "c", "d"} {
		p.enqueue(filepath.Join(root, "stage", "checkpoints", n))
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("enqueue waited %v for uploads", d)
	}
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p.flush(ctx)
	mu.Lock()
	defer mu.Unlock()
	want := "[a b b b"
	for range publishAttempts {
		want += " c"
	}
	want += " d]"
	if got := fmt.Sprint(calls); got != want {
		t.Fatalf("uploads %s, want %s", got, want)
	}
}

// BenchmarkPublisherHandOver is what the writer rank's step waits for when it
// publishes a checkpoint: the hand-over of the written folder to the background
// publisher, while an upload (here 50 ms each) is in flight.
func BenchmarkPublisherHandOver(b *testing.B) {
	p := newPublisher(func(ctx context.Context, dir string) error {
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
		return nil
	}, 0, discardLog(), nil)
	defer p.close()
	root := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.enqueue(filepath.Join(root, "stage", "checkpoints", fmt.Sprint(i)))
	}
}
