// Package web is the HTTP face of a Surge node: the pre-rendered campaign
// pages, the JSON API, the payment return and notification endpoints, the
// gateway-hosted pages of providers that have them, and the middleware in
// front of all of it (security headers, request IDs, access log, panic
// recovery, client IP, rate limiting, body limits). It also serves the
// admin API under /admin/v1/ (admin.go, over the ClusterAdmin interface),
// the HTTP metrics middleware and /metrics handler (metrics.go), and holds
// Client, the typed client of the admin API that clusterctl uses. Below
// net/http, on the same listener, the hot path (hot.go) answers the
// publicly cacheable GET/HEAD requests itself and hands every other
// connection to net/http.
//
// It owns the mapping from requests to donation commands and from errors to
// HTTP status codes (one place: errors.go). It imports donation and payment
// and nothing else internal; the ledger, the replicated proposer and the
// health checks it needs are small interfaces declared here (Ledger,
// Proposer, Health) that the node package adapts the cluster and storage
// to. Campaign content (templates, CSS, campaign.json) arrives as an fs.FS,
// by default the site package's embedded files.
//
// See DESIGN.md for the page pipeline, the hot path, the error mapping,
// the security headers and the rate limiter.
package web
