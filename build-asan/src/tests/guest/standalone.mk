# Builds the test guest without configure, from the top source directory:
#   make -f tests/guest/standalone.mk [CC=gcc]
srcdir = .
CC = cc
EXTRA_DIST =
CLEANFILES =

all: tests/guest/testguest

include $(srcdir)/tests/guest/Makefile.inc

clean:
	rm -f $(CLEANFILES)

.PHONY: all clean
