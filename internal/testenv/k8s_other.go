//go:build !linux

package testenv

import "syscall"

func k8sProcAttr() *syscall.SysProcAttr { return nil }
