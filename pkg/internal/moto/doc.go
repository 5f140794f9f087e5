// Package moto runs the moto AWS emulator (python3 -m moto.server) as a
// throwaway STS endpoint for tests and for the daemon's demo mode.
//
// Each Start gets its own server on a free port in its own process group, so
// packages can run their tests in parallel and nothing outlives the test: the
// whole group is killed in t.Cleanup, and Pdeathsig kills the server if the
// test binary dies first.
//
// moto accepts any signature and any keys, echoes the account of the role
// ARN it is asked to assume, and honours DurationSeconds. An unsigned request
// whose form has no Action is routed to moto's S3, not STS.
package moto
