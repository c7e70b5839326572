// Package farmtest holds the fault tests of the distributed mask farm: real
// `samdiffsr coordinator` and `samdiffsr worker` processes on loopback, a NATS server
// with JetStream embedded in the test process, and faults injected with SIGKILL.
// It has no non-test code.
package farmtest
