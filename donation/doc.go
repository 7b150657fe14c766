// Package donation is the domain of Surge, kept pure: money, donation states and
// their forward-only transitions, the versioned command envelope that travels
// through Raft, and the ledger rules that decide what a command changes.
//
// It owns the meaning of a donation and nothing else. It imports no other
// package of this module and does no I/O: no clock, no randomness, no map
// iteration in decisions. The node that proposes a command stamps IDs and
// times into it, so that every replica that applies the command reaches the
// same state.
//
// The storage package applies Decide's Effects inside one Badger transaction;
// the web package builds commands from requests and reads Results.
package donation
