// Package node is the composition root of a Surge node. It owns the order
// in which the parts are built, started and stopped, and nothing else:
//
//	storage (Raft log, stable store, FSM, snapshots)
//	  -> cluster (memberlist + Raft)
//	    -> payment providers -> web (pages, API, payment callbacks)
//
// Close runs the same list in reverse, in the order of design.md §4.5:
// stop taking HTTP, transfer leadership, leave gossip, stop Raft, close
// Badger. node is the only package that imports every other one.
package node
