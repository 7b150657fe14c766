package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/surgefund/surge/donation"
)

// Encodings of a d/ record, named by its first byte. See DESIGN.md
// "Record encoding".
const (
	donationEncodingJSON   = 1 // 0x01 + JSON donation.Donation: read, no longer written
	donationEncodingBinary = 2 // 0x02 + the fields below: written
)

// maxRecordEvents bounds the event list a record may claim, so that a
// corrupt count cannot ask for a huge allocation (each event also needs at
// least one byte, checked against what is left).
const maxRecordEvents = 1 << 16

// encodeDonation writes a d/ record in the binary encoding:
//
//	0x02
//	str ID, IdempotencyKey, RequestHash, Amount.Currency, Status,
//	    Provider, ProviderRef, Name, Email, Message
//	varint Amount.Minor, RefundedMinor, CreatedAt, UpdatedAt
//	byte flags (bit 0: Anonymous; the others are zero)
//	uvarint len(Events), then str each
//
// where str is uvarint length + bytes and varint is zig-zag
// (encoding/binary). The output is a function of d alone, so every replica
// writes the same bytes for the same donation.
func encodeDonation(d donation.Donation) []byte {
	n := 1 + 4*binary.MaxVarintLen64 + 1 + binary.MaxVarintLen32*(11+len(d.Events)) +
		len(d.ID) + len(d.IdempotencyKey) + len(d.RequestHash) + len(d.Amount.Currency) + len(d.Status) +
		len(d.Provider) + len(d.ProviderRef) + len(d.Name) + len(d.Email) + len(d.Message)
	for _, e := range d.Events {
		n += len(e)
	}
	b := make([]byte, 1, n)
	b[0] = donationEncodingBinary
	for _, s := range [...]string{d.ID, d.IdempotencyKey, d.RequestHash, string(d.Amount.Currency), string(d.Status),
		d.Provider, d.ProviderRef, d.Name, d.Email, d.Message} {
		b = appendRecordString(b, s)
	}
	for _, v := range [...]int64{d.Amount.Minor, d.RefundedMinor, d.CreatedAt, d.UpdatedAt} {
		b = binary.AppendVarint(b, v)
	}
	var flags byte
	if d.Anonymous {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(d.Events)))
	for _, e := range d.Events {
		b = appendRecordString(b, e)
	}
	return b
}

func appendRecordString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeDonation reads either encoding. It copies out of v (Badger's
// buffers are only valid inside the callback) and refuses truncated,
// trailing or otherwise malformed bytes with ErrCorrupt; it never panics.
func decodeDonation(v []byte) (donation.Donation, error) {
	if len(v) == 0 {
		return donation.Donation{}, fmt.Errorf("decode donation: %w: empty record", ErrCorrupt)
	}
	switch v[0] {
	case donationEncodingBinary:
		d, err := decodeDonationBinary(v[1:])
		if err != nil {
			return donation.Donation{}, fmt.Errorf("decode donation: %w: %v", ErrCorrupt, err)
		}
		return d, nil
	case donationEncodingJSON:
		d, err := donation.DecodeDonationJSON(v[1:])
		if err != nil {
			return donation.Donation{}, fmt.Errorf("decode donation: %w: %v", ErrCorrupt, err)
		}
		return d, nil
	}
	return donation.Donation{}, fmt.Errorf("decode donation: %w: unknown encoding %#x", ErrCorrupt, v[0])
}

// recordReader walks a binary record. Strings are cut from one copy of the
// record, so a decoded donation costs one allocation for all of them.
type recordReader struct {
	s   string
	err error
}

func (r *recordReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	var v uint64
	for i := 0; i < len(r.s) && i < binary.MaxVarintLen64; i++ {
		c := r.s[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break // overflows 64 bits
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			r.s = r.s[i+1:]
			return v
		}
	}
	r.err = fmt.Errorf("bad varint")
	return 0
}

func (r *recordReader) varint() int64 {
	u := r.uvarint()
	return int64(u>>1) ^ -int64(u&1) // zig-zag, as binary.AppendVarint writes
}

func (r *recordReader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.s)) {
		r.err = fmt.Errorf("string of %d bytes with %d left", n, len(r.s))
		return ""
	}
	s := r.s[:n]
	r.s = r.s[n:]
	return s
}

func decodeDonationBinary(v []byte) (donation.Donation, error) {
	r := recordReader{s: string(v)}
	var d donation.Donation
	d.ID = r.str()
	d.IdempotencyKey = r.str()
	d.RequestHash = r.str()
	d.Amount.Currency = donation.Currency(r.str())
	d.Status = donation.Status(r.str())
	d.Provider = r.str()
	d.ProviderRef = r.str()
	d.Name = r.str()
	d.Email = r.str()
	d.Message = r.str()
	d.Amount.Minor = r.varint()
	d.RefundedMinor = r.varint()
	d.CreatedAt = r.varint()
	d.UpdatedAt = r.varint()
	if r.err != nil {
		return donation.Donation{}, r.err
	}
	if len(r.s) == 0 {
		return donation.Donation{}, fmt.Errorf("truncated before flags")
	}
	flags := r.s[0]
	r.s = r.s[1:]
	if flags&^1 != 0 {
		return donation.Donation{}, fmt.Errorf("unknown flags %#x", flags)
	}
	d.Anonymous = flags&1 != 0
	n := r.uvarint()
	if r.err == nil && (n > maxRecordEvents || n > uint64(len(r.s))) {
		r.err = fmt.Errorf("%d events with %d bytes left", n, len(r.s))
	}
	if r.err == nil && n > 0 {
		d.Events = make([]string, n)
		for i := range d.Events {
			d.Events[i] = r.str()
		}
	}
	if r.err != nil {
		return donation.Donation{}, r.err
	}
	if len(r.s) != 0 {
		return donation.Donation{}, fmt.Errorf("%d trailing bytes", len(r.s))
	}
	return d, nil
}
