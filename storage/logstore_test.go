package storage

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func testLog(index uint64) *raft.Log {
	return &raft.Log{
		Index:      index,
		Term:       index/10 + 1,
		Type:       raft.LogCommand,
		Data:       []byte(fmt.Sprintf("data-%d", index)),
		Extensions: []byte{byte(index), 0xff},
		AppendedAt: time.Date(2026, 3, 1, 12, 0, 0, int(index), time.UTC),
	}
}

func logsFor(indexes ...uint64) []*raft.Log {
	out := make([]*raft.Log, len(indexes))
	for i, idx := range indexes {
		out[i] = testLog(idx)
	}
	return out
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func sameLog(t *testing.T, want, got *raft.Log) {
	t.Helper()
	if want.Index != got.Index || want.Term != got.Term || want.Type != got.Type ||
		!bytes.Equal(want.Data, got.Data) || !bytes.Equal(want.Extensions, got.Extensions) ||
		!want.AppendedAt.Equal(got.AppendedAt) {
		t.Fatalf("log %d differs:\nwant %+v\ngot  %+v", want.Index, want, got)
	}
}

func bounds(t *testing.T, s *LogStore) (uint64, uint64) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatalf("first index: %v", err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatalf("last index: %v", err)
	}
	return first, last
}

func TestLogStoreConformance(t *testing.T) {
	type step func(t *testing.T, s *LogStore)
	store := func(idx ...uint64) step {
		return func(t *testing.T, s *LogStore) {
			t.Helper()
			if err := s.StoreLogs(logsFor(idx...)); err != nil {
				t.Fatalf("store logs: %v", err)
			}
		}
	}
	del := func(min, max uint64) step {
		return func(t *testing.T, s *LogStore) {
			t.Helper()
			if err := s.DeleteRange(min, max); err != nil {
				t.Fatalf("delete range %d-%d: %v", min, max, err)
			}
		}
	}
	tests := []struct {
		name          string
		steps         []step
		first, last   uint64
		present       []uint64
		absent        []uint64
		reopenAndKeep bool
	}{
		{name: "empty store", first: 0, last: 0, absent: []uint64{0, 1, 2}},
		{name: "store one", steps: []step{func(t *testing.T, s *LogStore) {
			if err := s.StoreLog(testLog(1)); err != nil {
				t.Fatal(err)
			}
		}}, first: 1, last: 1, present: []uint64{1}, absent: []uint64{0, 2}},
		{name: "store batch", steps: []step{store(seq(1, 10)...)}, first: 1, last: 10, present: seq(1, 10), absent: []uint64{11}},
		{name: "store twice extends", steps: []step{store(seq(1, 5)...), store(seq(6, 9)...)}, first: 1, last: 9, present: seq(1, 9)},
		{name: "delete head", steps: []step{store(seq(1, 10)...), del(1, 3)}, first: 4, last: 10, present: seq(4, 10), absent: seq(1, 3)},
		{name: "delete tail", steps: []step{store(seq(1, 10)...), del(8, 10)}, first: 1, last: 7, present: seq(1, 7), absent: seq(8, 10)},
		{name: "delete everything", steps: []step{store(seq(1, 10)...), del(1, 10)}, first: 0, last: 0, absent: seq(1, 10)},
		{name: "delete beyond both ends", steps: []step{store(seq(5, 10)...), del(0, 1<<40)}, first: 0, last: 0, absent: seq(5, 10)},
		{name: "delete min greater than max is a no-op", steps: []step{store(seq(1, 5)...), del(4, 2)}, first: 1, last: 5, present: seq(1, 5)},
		{name: "delete then store after a gap", steps: []step{store(seq(1, 5)...), del(1, 5), store(seq(100, 102)...)}, first: 100, last: 102, present: seq(100, 102), absent: seq(1, 5)},
		{name: "conflict truncation then overwrite", steps: []step{store(seq(1, 10)...), del(6, 10), store(seq(6, 7)...)}, first: 1, last: 7, present: seq(1, 7), absent: seq(8, 10)},
		{name: "indexes above 255 sort numerically", steps: []step{store(250, 255, 256, 257, 511, 512, 65535, 65536, 1<<32, 1<<32+1)}, first: 250, last: 1<<32 + 1, present: []uint64{255, 256, 65536, 1 << 32}},
		{name: "indexes above 255 stored out of order", steps: []step{store(300), store(9), store(70000)}, first: 9, last: 70000, present: []uint64{9, 300, 70000}},
		{name: "delete head across a gap", steps: []step{store(seq(1, 10)...), store(seq(100, 110)...), del(1, 50)}, first: 100, last: 110, present: seq(100, 110), absent: seq(1, 10)},
		{name: "delete head larger than a chunk", steps: []step{store(seq(1, 3*deleteChunk)...), del(1, 2*deleteChunk+7)}, first: 2*deleteChunk + 8, last: 3 * deleteChunk, present: []uint64{2*deleteChunk + 8, 3 * deleteChunk}, absent: []uint64{1, deleteChunk, deleteChunk + 1, 2*deleteChunk + 7}, reopenAndKeep: true},
		{name: "delete tail larger than a chunk", steps: []step{store(seq(1, 3*deleteChunk)...), del(5, 3*deleteChunk)}, first: 1, last: 4, present: seq(1, 4), absent: []uint64{5, deleteChunk, 3 * deleteChunk}},
		{name: "reopen keeps everything", steps: []step{store(seq(1, 300)...), del(1, 10)}, first: 11, last: 300, present: seq(11, 300), absent: seq(1, 10), reopenAndKeep: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := OpenLogStore(dir, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			for _, st := range tc.steps {
				st(t, s)
			}
			if tc.reopenAndKeep {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if s, err = OpenLogStore(dir, testLogger(t)); err != nil {
					t.Fatal(err)
				}
			}
			if first, last := bounds(t, s); first != tc.first || last != tc.last {
				t.Fatalf("bounds = %d..%d, want %d..%d", first, last, tc.first, tc.last)
			}
			for _, idx := range tc.present {
				var got raft.Log
				if err := s.GetLog(idx, &got); err != nil {
					t.Fatalf("get log %d: %v", idx, err)
				}
				sameLog(t, testLog(idx), &got)
			}
			for _, idx := range tc.absent {
				var got raft.Log
				if err := s.GetLog(idx, &got); !errors.Is(err, raft.ErrLogNotFound) {
					t.Fatalf("get log %d: err = %v, want ErrLogNotFound", idx, err)
				}
			}
		})
	}
}

func TestStableStore(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenLogStore(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"missing key text is exactly not found", func(t *testing.T) {
			_, err := s.Get([]byte("CurrentTerm"))
			if err == nil || err.Error() != "not found" || !errors.Is(err, ErrKeyNotFound) {
				t.Fatalf("Get missing: %v", err)
			}
			_, err = s.GetUint64([]byte("CurrentTerm"))
			if err == nil || err.Error() != "not found" {
				t.Fatalf("GetUint64 missing: %v", err)
			}
		}},
		{"set and get bytes", func(t *testing.T) {
			if err := s.Set([]byte("LastVoteCand"), []byte("node-a")); err != nil {
				t.Fatal(err)
			}
			v, err := s.Get([]byte("LastVoteCand"))
			if err != nil || string(v) != "node-a" {
				t.Fatalf("get = %q, %v", v, err)
			}
		}},
		{"set and get uint64", func(t *testing.T) {
			for _, v := range []uint64{0, 1, 255, 256, 1 << 40, ^uint64(0)} {
				if err := s.SetUint64([]byte("CurrentTerm"), v); err != nil {
					t.Fatal(err)
				}
				got, err := s.GetUint64([]byte("CurrentTerm"))
				if err != nil || got != v {
					t.Fatalf("GetUint64 = %d, %v; want %d", got, err, v)
				}
			}
		}},
		{"stable keys do not show up as logs", func(t *testing.T) {
			if first, last := bounds(t, s); first != 0 || last != 0 {
				t.Fatalf("bounds = %d..%d with only stable keys", first, last)
			}
		}},
		{"wrong length uint64 is corrupt", func(t *testing.T) {
			if err := s.Set([]byte("odd"), []byte{1, 2, 3}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetUint64([]byte("odd")); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("GetUint64 of 3 bytes: %v", err)
			}
		}},
		{"reopen keeps stable keys", func(t *testing.T) {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = OpenLogStore(dir, testLogger(t)); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetUint64([]byte("CurrentTerm"))
			if err != nil || got != ^uint64(0) {
				t.Fatalf("after reopen GetUint64 = %d, %v", got, err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLogStoreClosed(t *testing.T) {
	s, err := OpenLogStore(t.TempDir(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	var l raft.Log
	checks := map[string]error{
		"store":  s.StoreLogs(logsFor(1)),
		"get":    s.GetLog(1, &l),
		"delete": s.DeleteRange(1, 2),
		"set":    s.Set([]byte("k"), []byte("v")),
	}
	_, checks["first"] = s.FirstIndex()
	_, checks["getkey"] = s.Get([]byte("k"))
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after close: %v, want ErrClosed", name, err)
		}
	}
}

// A batch bigger than one Badger transaction is split, and all of it lands.
func TestLogStoreSplitsHugeBatch(t *testing.T) {
	s := openTestLogStore(t, t.TempDir())
	big := bytes.Repeat([]byte("x"), 16<<10)
	var logs []*raft.Log
	for i := uint64(1); i <= 200; i++ { // 3.2 MB, above the 1.2 MB transaction limit
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: big})
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if first, last := bounds(t, s); first != 1 || last != 200 {
		t.Fatalf("bounds %d..%d", first, last)
	}
	for _, i := range []uint64{1, 77, 200} {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil || !bytes.Equal(got.Data, big) {
			t.Fatalf("log %d: %v", i, err)
		}
	}
	if err := s.DeleteRange(1, 199); err != nil {
		t.Fatal(err)
	}
	if first, last := bounds(t, s); first != 200 || last != 200 {
		t.Fatalf("after delete bounds %d..%d", first, last)
	}
}

func TestLogEncodingRoundTrip(t *testing.T) {
	tests := []*raft.Log{
		{},
		{Index: 1, Term: 1, Type: raft.LogNoop},
		{Index: 1 << 60, Term: 1 << 50, Type: raft.LogConfiguration, Data: []byte{0}, Extensions: []byte("ext")},
		{Index: 7, Term: 2, Type: raft.LogCommand, Data: bytes.Repeat([]byte("d"), 1000),
			AppendedAt: time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC)},
		testLog(12345),
	}
	for _, want := range tests {
		var got raft.Log
		if err := decodeLog(encodeLog(nil, want), &got); err != nil {
			t.Fatalf("decode %+v: %v", want, err)
		}
		sameLog(t, want, &got)
	}
}

func TestDecodeLogRejectsGarbage(t *testing.T) {
	good := encodeLog(nil, testLog(3))
	tests := map[string][]byte{
		"empty":          nil,
		"bad version":    append([]byte{9}, good[1:]...),
		"truncated":      good[:len(good)-3],
		"trailing bytes": append(append([]byte(nil), good...), 0),
		"huge length":    {logEncodingV1, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	for name, b := range tests {
		var l raft.Log
		if err := decodeLog(b, &l); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func FuzzDecodeLog(f *testing.F) {
	f.Add(encodeLog(nil, testLog(1)))
	f.Add(encodeLog(nil, &raft.Log{}))
	f.Add([]byte{1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(b, &l); err != nil {
			return
		}
		// Whatever decodes must encode back to something that decodes the same.
		var again raft.Log
		if err := decodeLog(encodeLog(nil, &l), &again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		sameLog(t, &l, &again)
	})
}

// TestLogStoreHeadTrimWhileAppending trims the head (as raft's compaction
// does from its snapshot goroutine) while another goroutine keeps
// appending, and checks both finish with the right bounds and entries.
func TestLogStoreHeadTrimWhileAppending(t *testing.T) {
	s := openTestLogStore(t, t.TempDir())
	const trimmed, stored, appended = 3 * deleteChunk, 4 * deleteChunk, 2000
	for lo := uint64(1); lo <= stored; lo += 512 {
		if err := s.StoreLogs(logsFor(seq(lo, lo+511)...)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.DeleteRange(1, trimmed) }()
	for lo := uint64(stored + 1); lo <= stored+appended; lo += 8 {
		if err := s.StoreLogs(logsFor(seq(lo, lo+7)...)); err != nil {
			t.Fatal(err)
		}
		if first, _ := bounds(t, s); first != 1 && first != trimmed+1 {
			t.Fatalf("first index %d while trimming", first)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if first, last := bounds(t, s); first != trimmed+1 || last != stored+appended {
		t.Fatalf("bounds = %d..%d, want %d..%d", first, last, trimmed+1, stored+appended)
	}
	for _, idx := range []uint64{trimmed + 1, stored, stored + 1, stored + appended} {
		var got raft.Log
		if err := s.GetLog(idx, &got); err != nil {
			t.Fatalf("get log %d: %v", idx, err)
		}
	}
	for _, idx := range []uint64{1, trimmed / 2, trimmed} {
		var got raft.Log
		if err := s.GetLog(idx, &got); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("get log %d: err = %v, want ErrLogNotFound", idx, err)
		}
	}
}
