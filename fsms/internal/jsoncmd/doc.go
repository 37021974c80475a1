// Package jsoncmd decodes the JSON commands of the bundled FSMs and encodes
// their results canonically, following the rules in docs/plugin-protocol.md
// section 6 so that implementations in other languages agree byte for byte.
package jsoncmd
