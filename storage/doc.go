// Package storage owns everything a node keeps on disk for Raft, in two
// Badger DBs in separate directories:
//
//   - LogStore is hashicorp/raft's LogStore and StableStore. Every commit is
//     fsynced before it returns.
//   - FSM is the persistent state machine (raft.FSM and raft.BatchingFSM):
//     donations, the unique keys that make commands idempotent, and the
//     per-currency totals, with the applied Raft index stored in the same
//     transaction as the effects. Snapshots stream a read-only view;
//     Restore replaces the state atomically by switching generations.
//
// It may import the donation package and the libraries raft and badger,
// nothing else of this module. It decides nothing about donations itself:
// donation.Decide does, against a State read from the same transaction
// that stores the result. DESIGN.md beside this file explains the key
// layout, the transaction boundaries and the durability argument.
package storage
