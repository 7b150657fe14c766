package site

import (
	"embed"
	"io/fs"
)

//go:embed campaign.json templates/*.html static/*
var content embed.FS

// FS returns the embedded default campaign content, rooted so that
// "campaign.json", "templates/..." and "static/..." are at its top.
func FS() fs.FS { return content }
