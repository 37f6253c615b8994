//go:build tools

// Package tools pins MailHog v1.0.1 for scripts/setup. MailHog v1.0.1 has no
// go.mod, so a plain `go install` resolves every dependency to its latest
// version, which fails (some are no longer served, newer x/crypto needs a newer
// Go). This module's go.mod/go.sum pin the versions that build; scripts/setup
// copies them to a temporary folder and runs
// `go build github.com/mailhog/MailHog`.
package tools

import _ "github.com/mailhog/MailHog"
