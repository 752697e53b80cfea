package storage

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Message is one telemetry message waiting for the broker's acknowledgement.
// Bucket "outbox": big-endian sequence number → message. Sequence numbers
// increase monotonically for the life of the file.
type Message struct {
	Seq     uint64    `json:"seq"`
	Topic   string    `json:"topic"`
	Payload []byte    `json:"payload"`
	Retain  bool      `json:"retain,omitempty"`
	At      time.Time `json:"at"`
}

// OutboxStats are the outbox's size and losses.
type OutboxStats struct {
	Count   int    `json:"count"`
	Bytes   int64  `json:"bytes"`
	Dropped uint64 `json:"dropped"` // dropped to stay within bounds, ever
	NextSeq uint64 `json:"next_seq"`
}

// Append adds a message, dropping the oldest while the outbox is over its
// count or byte bound. It returns the message's sequence number and how many
// were dropped now.
func (s *Store) Append(topic string, payload []byte) (uint64, int, error) {
	return s.AppendFunc(topic, false, func(uint64) ([]byte, error) { return payload, nil })
}

// AppendFunc is Append for payloads that carry their own sequence number:
// build runs inside the transaction with the number the message gets.
func (s *Store) AppendFunc(topic string, retain bool, build func(seq uint64) ([]byte, error)) (uint64, int, error) {
	var seq uint64
	var dropped int
	err := s.update("append to outbox", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		meta := tx.Bucket(bucketMeta)
		var err error
		if seq, err = b.NextSequence(); err != nil {
			return err
		}
		payload, err := build(seq)
		if err != nil {
			return err
		}
		m := Message{Seq: seq, Topic: topic, Payload: payload, Retain: retain, At: s.opts.Now()}
		val, err := encodeJSON(m)
		if err != nil {
			return err
		}
		if err := b.Put(u64(seq), val); err != nil {
			return err
		}
		count, bytes := counter(meta, keyOutboxCount)+1, counter(meta, keyOutboxBytes)+uint64(len(val))
		// Drop from the oldest. After Cursor.Delete, Next would skip an
		// entry, so each round starts again at First.
		c := b.Cursor()
		for k, v := c.First(); k != nil && (count > uint64(s.opts.OutboxMaxCount) || bytes > uint64(s.opts.OutboxMaxBytes)); k, v = c.First() {
			if binary.BigEndian.Uint64(k) == seq {
				break // never drop the message being appended
			}
			if err := c.Delete(); err != nil {
				return err
			}
			count--
			bytes -= uint64(len(v))
			dropped++
		}
		if err := putCounter(meta, keyOutboxCount, count); err != nil {
			return err
		}
		if err := putCounter(meta, keyOutboxBytes, bytes); err != nil {
			return err
		}
		return putCounter(meta, keyOutboxDropped, counter(meta, keyOutboxDropped)+uint64(dropped))
	})
	return seq, dropped, err
}

// Pending returns up to limit messages in sequence order, starting after
// seq after (0 for the oldest).
func (s *Store) Pending(after uint64, limit int) ([]Message, error) {
	var out []Message
	err := s.view("read outbox", func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			var m Message
			if err := decodeJSON(v, &m); err != nil {
				return fmt.Errorf("outbox seq %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// Ack removes acknowledged messages; unknown sequence numbers are ignored
// (a duplicate acknowledgement after a reconnect).
func (s *Store) Ack(seqs ...uint64) error {
	return s.update("acknowledge outbox", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		meta := tx.Bucket(bucketMeta)
		count, bytes := counter(meta, keyOutboxCount), counter(meta, keyOutboxBytes)
		for _, seq := range seqs {
			v := b.Get(u64(seq))
			if v == nil {
				continue
			}
			bytes -= uint64(len(v))
			count--
			if err := b.Delete(u64(seq)); err != nil {
				return err
			}
		}
		if err := putCounter(meta, keyOutboxCount, count); err != nil {
			return err
		}
		return putCounter(meta, keyOutboxBytes, bytes)
	})
}

// OutboxStats reports the outbox's size and losses.
func (s *Store) OutboxStats() (OutboxStats, error) {
	var st OutboxStats
	err := s.view("read outbox stats", func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		st = OutboxStats{
			Count:   int(counter(meta, keyOutboxCount)),
			Bytes:   int64(counter(meta, keyOutboxBytes)),
			Dropped: counter(meta, keyOutboxDropped),
			NextSeq: tx.Bucket(bucketOutbox).Sequence() + 1,
		}
		return nil
	})
	return st, err
}

func counter(b *bolt.Bucket, k []byte) uint64 {
	if v := b.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func putCounter(b *bolt.Bucket, k []byte, n uint64) error { return b.Put(k, u64(n)) }
