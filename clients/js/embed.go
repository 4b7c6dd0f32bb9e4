// Package js embeds herald.js, the browser SDK, for the server to serve.
package js

import _ "embed"

//go:embed herald.js
var source []byte

// Source returns herald.js, served at /herald.js. The slice is shared: do
// not modify it.
func Source() []byte { return source }
