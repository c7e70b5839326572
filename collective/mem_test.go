package collective

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

func TestMemConn(t *testing.T) {
	leakCheck(t)
	m := NewMem()
	ln, err := m.Listen("a")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := m.Listen("a"); err == nil {
		t.Fatal("two listeners on one address")
	}
	ctx := withLocalAddr(context.Background(), "b")
	client, err := m.Dial(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}

	// Data flows; a write larger than the queue completes as the reader reads.
	big := make([]byte, 3*memPipeCap+5)
	go client.Write(big)
	if _, err := io.ReadFull(server, make([]byte, len(big))); err != nil {
		t.Fatal(err)
	}

	// A stall delivers nothing until Resume; deadlines still fire.
	m.Stall("b")
	client.Write([]byte("hi"))
	server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := server.Read(make([]byte, 2)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while stalled: %v", err)
	}
	server.SetReadDeadline(time.Time{})
	m.Resume("b")
	got := make([]byte, 2)
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "hi" {
		t.Fatalf("after resume: %q %v", got, err)
	}

	// A cut fails both directions at once and refuses new dials.
	m.Cut("a", "b")
	if _, err := server.Read(got); !errors.Is(err, errMemCut) {
		t.Fatalf("read on a cut link: %v", err)
	}
	if _, err := client.Write(got); !errors.Is(err, errMemCut) {
		t.Fatalf("write on a cut link: %v", err)
	}
	if _, err := m.Dial(ctx, "a"); !errors.Is(err, errMemCut) {
		t.Fatalf("dial over a cut link: %v", err)
	}
	m.Heal("a", "b")
	c2, err := m.Dial(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := ln.Accept()

	// Close gives the peer EOF.
	c2.Close()
	if _, err := s2.Read(got); err != io.EOF {
		t.Fatalf("read after the peer closed: %v", err)
	}
	s2.Close()
	client.Close()
	server.Close()
	m.mu.Lock()
	n := len(m.pipes)
	m.mu.Unlock()
	if n != 0 {
		t.Errorf("%d pipes still registered after every connection closed", n)
	}
}
