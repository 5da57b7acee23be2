package testenv

import "syscall"

// k8sProcAttr kills a server when the test binary dies, so that no server outlives a
// killed test run.
func k8sProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
