// Package config reads imds-shim's YAML configuration file.
//
// The file is decoded strictly: an unknown key is an error, so a typo never
// silently falls back to a default. Validate reports every problem at once,
// each naming the key as it is spelled in the file. The key names are a
// public interface — operators' files depend on them — so they are only ever
// added to, never renamed.
package config
