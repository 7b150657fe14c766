// Package payment owns the boundary with payment gateways: the Provider
// interface that fits both push-style (signed notifications) and pull-style
// (ask for the status after the redirect) gateways, and the providers
// themselves, starting with the dev test gateway.
//
// It imports donation for money and outcomes and nothing else internal. A
// provider never decides a donation's state: it turns verified gateway
// messages into Events, and the ledger decides.
package payment
