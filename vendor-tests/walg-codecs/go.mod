module walrus/walgcodecs

go 1.23

require (
	github.com/klauspost/compress v1.18.2
	github.com/pierrec/lz4/v4 v4.1.21
	github.com/ulikunitz/xz v0.5.15
)
