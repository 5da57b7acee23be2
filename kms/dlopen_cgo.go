//go:build cgo && !nopkcs11

package kms

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

static const char *meshpki_load_error(const char *path) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) return dlerror();
	dlclose(h);
	return NULL;
}
*/
import "C"

import "unsafe"

// loadError is why the dynamic loader refuses the PKCS#11 module at path (a file
// missing, a library it needs missing, another architecture), "" when it loads:
// crypto11 reports only "failed to open module".
func loadError(path string) string {
	p := C.CString(path)
	defer C.free(unsafe.Pointer(p))
	if r := C.meshpki_load_error(p); r != nil {
		return C.GoString(r)
	}
	return ""
}
