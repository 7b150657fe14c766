package node

import (
	"strings"
	"testing"
)

func TestValidateRSSLimit(t *testing.T) {
	for _, c := range []struct {
		limit int64
		ok    bool
	}{{0, true}, {MinRSSLimit, true}, {150 << 20, true}, {MinRSSLimit - 1, false}, {1, false}, {-1, false}} {
		cfg := DefaultConfig()
		cfg.RSSLimit = c.limit
		err := cfg.Validate()
		if c.ok && err != nil {
			t.Errorf("RSSLimit %d refused: %v", c.limit, err)
		}
		if !c.ok && (err == nil || !strings.HasPrefix(err.Error(), "rss-limit: ")) {
			t.Errorf("RSSLimit %d: error %v, want one naming rss-limit", c.limit, err)
		}
	}
}
