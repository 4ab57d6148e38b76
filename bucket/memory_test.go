package bucket_test

import (
	"testing"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/buckettest"
)

func TestMemoryStoreConformance(t *testing.T) {
	buckettest.RunStoreTests(t, func(*testing.T) bucket.Store {
		return bucket.NewMemoryStore(bucket.MemoryConfig{})
	})
}
