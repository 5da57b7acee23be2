package testenv

import "syscall"

// vaultProcAttr kills vaultdev when the test process dies without stopping it.
func vaultProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
