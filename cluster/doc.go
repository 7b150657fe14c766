// Package cluster owns membership and consensus for a Surge node: gossip
// (hashicorp/memberlist) decides who exists, Raft (hashicorp/raft) decides who
// votes and orders every write.
//
// It bootstraps (alone, or with --bootstrap-expect N peers), joins seeds,
// runs the leader-only reconcile loop that adds, promotes, demotes and removes
// servers, forwards writes from any node to the leader and holds them through
// an election, multiplexes Raft and an authenticated internal RPC on one TCP
// port, reports the status of this node and of its peers, and saves or
// restores the whole state as a user snapshot through Raft.
//
// Commands are opaque bytes. The package imports nothing internal to Surge:
// only the standard library, hashicorp/raft, hashicorp/memberlist and
// hashicorp/go-hclog. The node package supplies the FSM and the stores.
//
// See DESIGN.md for the reasoning behind bootstrap, reconcile, promotion,
// forwarding and the timings.
package cluster
