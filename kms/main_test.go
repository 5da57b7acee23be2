package kms_test

import (
	"os"
	"testing"

	cflog "github.com/cloudflare/cfssl/log"
)

func TestMain(m *testing.M) {
	cflog.Level = cflog.LevelFatal // cfssl logs every signature otherwise
	os.Exit(m.Run())
}
