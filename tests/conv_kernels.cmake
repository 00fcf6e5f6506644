convoy_add_test(test_conv_kernels SOURCES test_conv_kernels.c INTERNAL TIMEOUT 600)
