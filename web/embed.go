// Package web embeds the demo chat page served at / and the admin page
// served at /admin.
package web

import (
	"embed"
	"io/fs"
)

//go:embed index.html app.js style.css admin.html admin.js
var files embed.FS

// FS returns the pages' files.
func FS() fs.FS { return files }
