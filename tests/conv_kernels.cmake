convoy_add_test(test_conv_kernels SOURCES test_conv_kernels.c ${CONVOY_GEOM_TEST_SOURCES} INTERNAL TIMEOUT 600)
