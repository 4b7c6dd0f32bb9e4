// Package web embeds the demo chat page served at /.
package web

import (
	"embed"
	"io/fs"
)

//go:embed index.html app.js style.css
var files embed.FS

// FS returns the demo page's files.
func FS() fs.FS { return files }
