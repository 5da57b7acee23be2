//go:build !linux

package testenv

import "syscall"

func vaultProcAttr() *syscall.SysProcAttr { return nil }
