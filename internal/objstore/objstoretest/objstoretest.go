// Package objstoretest damages objects in a JetStream Object Store the way a faulty
// disk or a buggy writer would, so tests can show that every reader notices.
package objstoretest

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// FlipByte rewrites the first chunk of object name in bucket with its byte at
// offset (within that chunk) inverted, below the Object Store API: the object's
// metadata (size, digest) is untouched, as after silent corruption on a server.
func FlipByte(ctx context.Context, js jetstream.JetStream, bucket, name string, offset int) error {
	st, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return fmt.Errorf("objstoretest: bucket %s: %w", bucket, err)
	}
	oi, err := st.GetInfo(ctx, name)
	if err != nil {
		return fmt.Errorf("objstoretest: object %s: %w", name, err)
	}
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return fmt.Errorf("objstoretest: stream of %s: %w", bucket, err)
	}
	subj := fmt.Sprintf("$O.%s.C.%s", bucket, oi.NUID)
	// The first chunk: the lowest sequence on the chunk subject.
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return fmt.Errorf("objstoretest: read chunks of %s: %w", name, err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
	if err != nil {
		return fmt.Errorf("objstoretest: first chunk of %s: %w", name, err)
	}
	md, err := msg.Metadata()
	if err != nil {
		return err
	}
	data := append([]byte(nil), msg.Data()...)
	if offset < 0 || offset >= len(data) {
		return fmt.Errorf("objstoretest: offset %d outside the first chunk (%d bytes)", offset, len(data))
	}
	data[offset] ^= 0xff
	// Put the flipped chunk in the first chunk's place: delete every chunk, then
	// publish them again in order with the first one changed.
	var chunks [][]byte
	chunks = append(chunks, data)
	seqs := []uint64{md.Sequence.Stream}
	for i := 1; i < int(oi.Chunks); i++ {
		m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("objstoretest: chunk %d of %s: %w", i, name, err)
		}
		mm, err := m.Metadata()
		if err != nil {
			return err
		}
		chunks = append(chunks, append([]byte(nil), m.Data()...))
		seqs = append(seqs, mm.Sequence.Stream)
	}
	for _, s := range seqs {
		if err := stream.DeleteMsg(ctx, s); err != nil {
			return fmt.Errorf("objstoretest: delete chunk %d: %w", s, err)
		}
	}
	for _, c := range chunks {
		if _, err := js.Publish(ctx, subj, c); err != nil {
			return fmt.Errorf("objstoretest: republish chunk: %w", err)
		}
	}
	return nil
}
