// Package site holds the default campaign content of a Surge node: the
// campaign configuration (campaign.json), the HTML templates and the static
// assets (CSS, a few lines of JavaScript, an SVG logo), embedded into the
// binary.
//
// It owns content only and imports nothing internal. The web package reads
// whatever fs.FS it is given with the same layout, so an operator can serve
// their own campaign from a directory (os.DirFS) without rebuilding:
//
//	campaign.json
//	templates/layout.html   the page frame: defines "layout", calls "title" and "main"
//	templates/{home,donate,success,error,contact,about,notfound}.html
//	static/style.css, static/app.js, static/logo.svg (any files under static/)
package site
