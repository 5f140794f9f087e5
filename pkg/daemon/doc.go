// Package daemon is the life cycle of `imds-shim serve`: the start-up order,
// systemd notification, reload on SIGHUP, the watchdog, status and an
// orderly stop that removes everything the daemon installed.
//
// Every side effect is injected through Deps, declared here as small
// interfaces, so that tests drive the whole life cycle with fakes and the
// production wiring lives in one place (wire.go).
package daemon
